"""Import throughput: N customers from a generated CSV through crm.records.importing, end to end
(reading the file, checking every row, numbers, search vectors, inserts, commit), into a fresh tenant.

The last line of output is JSON: ``{"rows": n, "seconds": s, "rows_per_s": r, "check_rows_per_s": c}``,
where ``check_rows_per_s`` is a dry run of the same file (reading and checking only). bench/crm.py
loads its customers the same way (``generate_csv`` and ``import_csv``).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from typing import Any

import benchlib

benchlib.fix_sys_path()

from core.db import Database, make_engine  # noqa: E402
from core.permissions import Actor  # noqa: E402
from crm import schema  # noqa: E402, F401 - the CRM's tables in the tenant metadata
from crm.records import importing, tabular  # noqa: E402
from crm.records.entity import entity  # noqa: E402
from crm.records.scope import viewer_for  # noqa: E402
from tenants import migrator, services  # noqa: E402

REGIONS = ("北京", "上海", "浙江", "广东", "深圳", "四川", "湖北", "江苏", "Overseas", "east")
INDUSTRIES = ("制造业", "信息技术", "金融", "批发零售", "Logistics", "教育")
WORDS = ("华为", "腾飞", "电气", "科技", "贸易", "实业", "网络", "软件", "物流", "食品", "医药", "建设")
TARGET_ROWS_PER_S = 10_000
PASSWORD = "bench-password-123"  # noqa: S105 - a throw-away tenant in a throw-away database


def generate_csv(rows: int, seed: int = 7) -> bytes:
    """A customers CSV with the source documents' Chinese headers; every row valid and distinct."""
    rnd = random.Random(seed)
    out = io.StringIO()
    out.write("客户名称,联系电话,电子邮箱,所在地区,行业,客户性质,公司地址,开户银行,银行账号,备注\r\n")
    for i in range(rows):
        name = f"{rnd.choice(REGIONS)}{rnd.choice(WORDS)}{rnd.choice(WORDS)}有限公司{i}"
        out.write(f"{name},010-{10000000 + i},c{i}@example.com,{rnd.choice(REGIONS)},{rnd.choice(INDUSTRIES)},"
                  f"私营,某某路{i}号,中国银行,6222{i:012d},导入测试\r\n")
    return out.getvalue().encode("utf-8")


def import_csv(db: Database, tenant: Any, data: bytes, *, dry_run: bool = False,
               max_rows: int = 1_000_000) -> importing.ImportResult:
    """Import ``data`` as the tenant's system actor (what ``courtyard crm import`` does), committed."""
    with db.transaction(tenant) as session:
        viewer = viewer_for(session, Actor.system("bench"))
        return importing.run(session, viewer, entity("customers"),
                             lambda: tabular.read_table(data, "customers.csv", max_rows=max_rows,
                                                        max_bytes=len(data) + 1),
                             filename="customers.csv", dry_run=dry_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with benchlib.bench_env(need_redis=False) as env:
        engine = make_engine(env.database_url, pool_size=2)
        migrator.upgrade_shared(engine, migrator.lock_policy(env.settings))
        db = Database(engine)
        with db.transaction() as session:
            result = services.provision(session, Actor.system("bench"), slug="speed", name="Speed 速度",
                                        admin_email="admin@speed.test", admin_password=PASSWORD)
            tenant = services.bound(result.tenant)
        data = generate_csv(args.rows)
        print(f"{args.rows} rows, {len(data) / 1e6:.1f} MB", file=sys.stderr)
        start = time.perf_counter()
        checked = import_csv(db, tenant, data, dry_run=True)
        check_s = time.perf_counter() - start
        assert checked.imported == args.rows, checked.errors[:5]
        start = time.perf_counter()
        done = import_csv(db, tenant, data)
        seconds = time.perf_counter() - start
        assert done.imported == args.rows, done.errors[:5]
        engine.dispose()
    rate = args.rows / seconds
    print(f"import: {seconds:.2f} s, {rate:,.0f} rows/s (target {TARGET_ROWS_PER_S:,}); "
          f"check only: {args.rows / check_s:,.0f} rows/s", file=sys.stderr)
    print(json.dumps({"rows": args.rows, "seconds": round(seconds, 2), "rows_per_s": round(rate),
                      "check_rows_per_s": round(args.rows / check_s)}))


if __name__ == "__main__":
    main()
