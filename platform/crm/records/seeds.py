"""The dictionaries every tenant starts with: the classifications of the source documents (seed 002:460
for nature and group), plus the industries, sources, levels and regions Chinese CRMs ship with.

Rows are (kind, code, English, Chinese, parent code). Codes are what records store; labels can be
renamed and items deactivated by the tenant admin.
"""

from __future__ import annotations

Seed = tuple[str, str, str, str, str | None]

KINDS: dict[str, tuple[str, str]] = {
    "customer_nature": ("Customer nature", "客户性质"),
    "customer_group": ("Customer group", "客户组别"),
    "industry": ("Industry", "行业"),
    "customer_source": ("Customer source", "客户来源"),
    "customer_level": ("Customer level", "客户级别"),
    "region": ("Region", "地区"),
}

_REGIONS: dict[tuple[str, str, str], tuple[tuple[str, str, str], ...]] = {
    ("north", "North China", "华北"): (("beijing", "Beijing", "北京"), ("tianjin", "Tianjin", "天津"),
                                       ("hebei", "Hebei", "河北"), ("shanxi", "Shanxi", "山西"),
                                       ("inner_mongolia", "Inner Mongolia", "内蒙古")),
    ("east", "East China", "华东"): (("shanghai", "Shanghai", "上海"), ("jiangsu", "Jiangsu", "江苏"),
                                     ("zhejiang", "Zhejiang", "浙江"), ("anhui", "Anhui", "安徽"),
                                     ("fujian", "Fujian", "福建"), ("jiangxi", "Jiangxi", "江西"),
                                     ("shandong", "Shandong", "山东")),
    ("south", "South China", "华南"): (("guangdong", "Guangdong", "广东"), ("shenzhen", "Shenzhen", "深圳"),
                                       ("guangxi", "Guangxi", "广西"), ("hainan", "Hainan", "海南"),
                                       ("hongkong", "Hong Kong", "香港"), ("macau", "Macau", "澳门")),
    ("central", "Central China", "华中"): (("henan", "Henan", "河南"), ("hubei", "Hubei", "湖北"),
                                           ("hunan", "Hunan", "湖南")),
    ("southwest", "Southwest China", "西南"): (("chongqing", "Chongqing", "重庆"), ("sichuan", "Sichuan", "四川"),
                                               ("guizhou", "Guizhou", "贵州"), ("yunnan", "Yunnan", "云南"),
                                               ("tibet", "Tibet", "西藏")),
    ("northwest", "Northwest China", "西北"): (("shaanxi", "Shaanxi", "陕西"), ("gansu", "Gansu", "甘肃"),
                                               ("qinghai", "Qinghai", "青海"), ("ningxia", "Ningxia", "宁夏"),
                                               ("xinjiang", "Xinjiang", "新疆")),
    ("northeast", "Northeast China", "东北"): (("liaoning", "Liaoning", "辽宁"), ("jilin", "Jilin", "吉林"),
                                               ("heilongjiang", "Heilongjiang", "黑龙江")),
    ("overseas", "Overseas", "海外"): (("taiwan", "Taiwan", "台湾"), ("asia", "Asia (other)", "亚洲其他"),
                                       ("europe", "Europe", "欧洲"), ("americas", "Americas", "美洲")),
}


def _regions() -> list[Seed]:
    rows: list[Seed] = []
    for (code, en, zh), children in _REGIONS.items():
        rows.append(("region", code, en, zh, None))
        rows.extend(("region", c, cen, czh, code) for c, cen, czh in children)
    return rows


DICTIONARIES: list[Seed] = [
    ("customer_nature", "jv", "Joint venture", "合资", None),
    ("customer_nature", "private", "Private", "私营", None),
    ("customer_nature", "wholly_owned", "Wholly-owned", "独资", None),
    ("customer_nature", "state", "State-owned", "国有", None),
    ("customer_nature", "government", "Government", "政府", None),
    ("customer_nature", "individual", "Individual", "个人", None),
    ("customer_group", "existing", "Existing customers", "现有客户", None),
    ("customer_group", "potential", "Potential customers", "潜在客户", None),
    ("customer_group", "historical", "Historical customers", "历史客户", None),
    ("customer_group", "competitor", "Competitors' customers", "竞争对手的客户", None),
    ("customer_group", "interconnected", "Interconnected customers", "互连互通客户", None),
    ("industry", "manufacturing", "Manufacturing", "制造业", None),
    ("industry", "it", "Information technology", "信息技术", None),
    ("industry", "finance", "Finance", "金融", None),
    ("industry", "retail", "Retail and wholesale", "批发零售", None),
    ("industry", "construction", "Construction and real estate", "建筑地产", None),
    ("industry", "energy", "Energy and utilities", "能源", None),
    ("industry", "logistics", "Logistics", "物流运输", None),
    ("industry", "healthcare", "Healthcare", "医疗健康", None),
    ("industry", "education", "Education", "教育", None),
    ("industry", "public", "Public sector", "政府及公共事业", None),
    ("industry", "other", "Other", "其他", None),
    ("customer_source", "referral", "Referral", "客户介绍", None),
    ("customer_source", "website", "Website", "网站", None),
    ("customer_source", "exhibition", "Trade show", "展会", None),
    ("customer_source", "cold_call", "Cold call", "电话开发", None),
    ("customer_source", "advertising", "Advertising", "广告", None),
    ("customer_source", "partner", "Partner", "合作伙伴", None),
    ("customer_source", "other", "Other", "其他", None),
    ("customer_level", "vip", "VIP", "VIP客户", None),
    ("customer_level", "important", "Important", "重要客户", None),
    ("customer_level", "general", "General", "普通客户", None),
    ("customer_level", "potential", "Potential", "潜在客户", None),
    *_regions(),
]
