"""`courtyard demo`'s believable company for acme: departments, people in every role, customers with
contacts, a quarter of activities and tasks, custom fields and shares, all through the record services
(so the data is exactly what the product itself would have written).

Deterministic (a fixed random seed): every fresh install shows the same company.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.db import utcnow
from core.permissions import Actor
from core.security import hash_password
from crm.accounts.models import CONTACTS, CUSTOMERS
from crm.activities.models import ACTIVITIES, TASKS
from crm.records import definitions, services
from crm.records.models import CustomField
from crm.records.scope import viewer_for
from tenants import services as tenant_services
from tenants.models import User

CITIES = [("北京", "beijing", "Beijing"), ("上海", "shanghai", "Shanghai"), ("深圳", "shenzhen", "Shenzhen"),
          ("广州", "guangdong", "Guangzhou"), ("杭州", "zhejiang", "Hangzhou"), ("南京", "jiangsu", "Nanjing"),
          ("成都", "sichuan", "Chengdu"), ("重庆", "chongqing", "Chongqing"), ("武汉", "hubei", "Wuhan"),
          ("西安", "shaanxi", "Xi'an"), ("天津", "tianjin", "Tianjin"), ("苏州", "jiangsu", "Suzhou"),
          ("青岛", "shandong", "Qingdao"), ("长沙", "hunan", "Changsha"), ("沈阳", "liaoning", "Shenyang")]
WORDS = ["华为", "恒瑞", "腾飞", "远航", "金桥", "宏图", "东方", "长城", "新锐", "博远", "鼎盛", "天成", "华信", "佳木",
         "蓝海", "星河", "瑞丰", "中联", "汇通", "安泰", "永达", "盛世", "海纳", "云帆", "明德", "聚源", "正泰", "润和"]
SUFFIXES = [("科技有限公司", "it"), ("电子有限公司", "manufacturing"), ("贸易有限公司", "retail"),
            ("机械制造有限公司", "manufacturing"), ("建设集团", "construction"), ("物流有限公司", "logistics"),
            ("医疗器械有限公司", "healthcare"), ("能源股份有限公司", "energy"), ("教育科技有限公司", "education"),
            ("投资管理有限公司", "finance")]
ENGLISH = ["Acme Trading", "Harbor Logistics", "Northwind Foods", "Blue Ocean Tech", "Summit Industrial",
           "Pioneer Medical", "Evergreen Retail", "Silverline Energy", "Redwood Education", "Lotus Capital"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
         "秀兰", "霞", "平", "刚", "桂英", "建华", "晓东", "志强", "海燕", "文博", "子涵", "雨萱"]
TITLES = [("总经理", "economic"), ("采购经理", "economic"), ("技术总监", "technical"), ("工程师", "user"),
          ("财务主管", "influencer"), ("行政主管", "user"), ("IT 经理", "technical"), ("销售总监", "coach")]
CALL_SUBJECTS = ["电话沟通采购需求", "确认报价细节", "跟进样品反馈", "Follow-up on the proposal", "年度合作回访",
                 "了解新项目预算", "售后问题回访", "Discuss renewal terms"]
VISIT_SUBJECTS = ["上门拜访技术负责人", "现场演示产品", "参观客户工厂", "On-site workshop", "拜访采购部"]
MEETING_SUBJECTS = ["方案评审会", "季度业务回顾", "Kick-off meeting", "合同谈判"]
TASK_TITLES = ["发送报价单", "准备演示材料", "回访客户满意度", "Send the contract draft", "整理会议纪要",
               "安排技术交流", "Call back about the invoice", "更新客户资料", "确认付款进度"]


@dataclass(frozen=True)
class Person:
    key: str
    name: str
    role: str
    department: str


PEOPLE = [Person("wang.jingli", "王经理 Wang", "manager", "销售部 Sales"),
          Person("zhang.wei", "张伟 Zhang Wei", "sales", "北区 North"),
          Person("li.na", "李娜 Li Na", "sales", "北区 North"),
          Person("liu.yang", "刘洋 Liu Yang", "sales", "南区 South"),
          Person("zhou.min", "周敏 Zhou Min", "sales", "南区 South"),
          Person("chen.jing", "陈静 Chen Jing", "service", "客服部 Service")]


def _org(session: Session, actor: Actor, slug: str, password: str) -> dict[str, User]:
    hq = tenant_services.save_department(session, actor, name="总部 Head office", parent_id=None)
    sales = tenant_services.save_department(session, actor, name="销售部 Sales", parent_id=hq.id)
    depts = {"销售部 Sales": sales,
             "北区 North": tenant_services.save_department(session, actor, name="北区 North", parent_id=sales.id),
             "南区 South": tenant_services.save_department(session, actor, name="南区 South", parent_id=sales.id),
             "客服部 Service": tenant_services.save_department(session, actor, name="客服部 Service", parent_id=hq.id)}
    hashed = hash_password(password)
    users = {}
    for p in PEOPLE:
        user = tenant_services.create_user(session, actor, email=f"{p.key}@{slug}.test", name=p.name, role=p.role,
                                           department_id=depts[p.department].id)
        user.password_hash = hashed
        users[p.key] = user
    session.flush()
    return users


def _custom_fields(session: Session) -> None:
    session.add_all([
        CustomField(entity="customers", key="annual_purchases", type="money", label_en="Annual purchases",
                    label_zh="年采购额", sort_order=1),
        CustomField(entity="customers", key="stage", type="choice", label_en="Partnership stage", label_zh="合作阶段",
                    sort_order=2, options=[{"value": "new", "label_en": "New", "label_zh": "初次接触"},
                                           {"value": "trial", "label_en": "Trial", "label_zh": "试用"},
                                           {"value": "partner", "label_en": "Partner", "label_zh": "长期合作"}]),
        CustomField(entity="customers", key="first_deal", type="date", label_en="First deal", label_zh="首次合作日期",
                    sort_order=3),
        CustomField(entity="contacts", key="wechat", type="text", label_en="WeChat", label_zh="微信", sort_order=1),
    ])
    session.flush()
    definitions.forget(session)


def _person_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


def populate(session: Session, slug: str, *, password: str, customers: int = 500, seed: int = 7) -> dict[str, int]:
    """Fill a freshly provisioned tenant with the demo company; returns what was created."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    system = Actor.system("demo")
    users = _org(session, system, slug, password)
    _custom_fields(session)
    reps = [users[k] for k in ("zhang.wei", "li.na", "liu.yang", "zhou.min")]
    viewers = {u.id: viewer_for(session, tenant_services.actor_for(u), locale="zh") for u in users.values()}
    now = utcnow().replace(second=0, microsecond=0)
    counts = {"customers": 0, "contacts": 0, "activities": 0, "tasks": 0, "shares": 0}
    used: set[str] = set()
    for i in range(customers):
        owner = reps[i % len(reps)] if i % 9 else users["wang.jingli"]
        v = viewers[owner.id]
        city, region, city_en = rng.choice(CITIES)
        if i % 7 == 6:
            name = f"{rng.choice(ENGLISH)} ({city_en}) Co., Ltd."
            industry = rng.choice(SUFFIXES)[1]
        else:
            suffix, industry = rng.choice(SUFFIXES)
            name = f"{city}{rng.choice(WORDS)}{suffix}"
        if name in used:
            name = f"{name[:-4]}{rng.choice(WORDS)}{name[-4:]}"
        used.add(name)
        data = {
            "name": name, "region": region, "industry": industry,
            "level": rng.choice(["vip", "important", "general", "general", "potential"]),
            "nature": rng.choice(["private", "private", "jv", "state", "wholly_owned"]),
            "customer_group": rng.choice(["existing", "existing", "potential", "historical"]),
            "source": rng.choice(["referral", "website", "exhibition", "cold_call", "partner"]),
            "phone": f"0{rng.randint(10, 99)}-{rng.randint(60000000, 89999999)}",
            "email": f"info{i}@example-{i % 97}.cn",
            "address": f"{city}市{rng.choice(['高新区', '朝阳区', '浦东新区', '天河区', '滨江区'])}"
                       f"{rng.choice(WORDS)}路{rng.randint(1, 300)}号",
            "bank": rng.choice(["中国工商银行", "中国建设银行", "招商银行", "中国银行"]) + city + "分行",
            "bank_account": str(rng.randint(10**15, 10**16 - 1)),
            "tags": rng.sample(["重点", "老客户", "2026展会", "待回款", "高潜力"], k=rng.randint(0, 2)),
            "annual_purchases": str(rng.randint(5, 900) * 10000),
            "stage": rng.choice(["new", "trial", "partner"]),
        }
        customer = services.create(session, v, CUSTOMERS, data)
        counts["customers"] += 1
        for n in range(rng.randint(1, 3)):
            title, role = rng.choice(TITLES)
            person = _person_name(rng)
            services.create(session, v, CONTACTS, {
                "name": person, "customer_id": customer.id, "title": title, "decision_role": role,
                "mobile": f"1{rng.choice('3578')}{rng.randint(100000000, 999999999)}",
                "email": f"contact{i}_{n}@example-{i % 97}.cn", "is_primary": n == 0,
                "importance": rng.choice(["high", "medium", "low"]), "gender": rng.choice(["m", "f"]),
                "wechat": f"wx_{i}_{n}"})
            counts["contacts"] += 1
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(["call", "call", "visit", "meeting", "email", "note"])
            subject = rng.choice({"visit": VISIT_SUBJECTS, "meeting": MEETING_SUBJECTS}.get(kind, CALL_SUBJECTS))
            when = now - dt.timedelta(days=rng.randint(0, 90), hours=rng.randint(0, 9))
            services.create(session, v, ACTIVITIES, {
                "kind": kind, "subject": subject, "occurred_at": when, "customer_id": customer.id,
                "body": "客户对方案总体满意，希望下周给出正式报价。" if kind != "note" else "注意：客户财务流程较长。",
                "next_follow_up": (when + dt.timedelta(days=7)).date() if rng.random() < 0.3 else None})
            counts["activities"] += 1
        if rng.random() < 0.8:
            due = now + dt.timedelta(days=rng.randint(-10, 20), hours=rng.randint(0, 8))
            done = due < now and rng.random() < 0.6
            task = services.create(session, v, TASKS, {
                "title": rng.choice(TASK_TITLES), "due_at": due, "customer_id": customer.id,
                "priority": rng.choice(["high", "normal", "normal", "low"]),
                "reminder_at": due - dt.timedelta(hours=1) if due > now else None,
                "recurrence": "monthly" if rng.random() < 0.05 else None})
            if done:
                task.status, task.completed_at = "done", due
            counts["tasks"] += 1
        if i % 25 == 3:
            other = reps[(i + 1) % len(reps)]
            services.share(session, v, CUSTOMERS, customer.id, user_id=other.id,
                           access="edit" if i % 50 == 3 else "read")
            counts["shares"] += 1
    # Today's work for everyone: a few tasks due today.
    for rep in reps:
        for title in ("今天回访重点客户", "Prepare tomorrow's visit"):
            services.create(session, viewers[rep.id], TASKS, {
                "title": title, "due_at": now.replace(hour=min(now.hour + 2, 23)), "priority": "high"})
            counts["tasks"] += 1
    return counts


def demo_user_emails(slug: str) -> list[str]:
    return [f"{p.key}@{slug}.test" for p in PEOPLE]


