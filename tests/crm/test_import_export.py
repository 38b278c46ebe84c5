"""Import and export of records: files in every encoding, every kind of bad row, dry runs, skipping bad
rows, duplicates, the data scope of exports, jobs that die and run again, and the CLI."""

from __future__ import annotations

import codecs
import io

import pytest
from sqlalchemy import func, select

from core.errors import PermissionDenied
from crm.accounts.models import CONTACTS, CUSTOMERS, Contact, Customer
from crm.records import importing, services, tabular
from crm.records.models import NumberFormat
from tenants.models import AuditEntry
from tests.crm.conftest import as_user

HEADER = "客户名称,联系电话,电子邮箱,所在地区,客户性质,客户级别,备注"


def csv_bytes(text: str, encoding: str = "utf-8") -> bytes:
    data = text.replace("\n", "\r\n").encode(encoding)
    return (codecs.BOM_UTF8 + data) if encoding == "utf-8-sig-manual" else data


def opener(data: bytes, filename: str = "customers.csv"):
    return lambda: tabular.read_table(data, filename, max_rows=1000, max_bytes=10 << 20)


def do_import(session, viewer, ent, data: bytes, filename: str = "customers.csv", **kw):
    return importing.run(session, viewer, ent, opener(data, filename), filename=filename, **kw)


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model).where(model.deleted_at.is_(None)))


GOOD = (HEADER + "\n"
        "北京华为技术有限公司,010-12345678,info@huawei.example,北京,国有,VIP客户,第一行\n"
        "上海电气,13800138000,,Shanghai,私营,重要客户,\n"
        "Acme Trading,+86 21 5555 6666,sales@acme.example,east,Joint venture,general,\"多行\n备注\"\n")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_in_each_encoding_imports_every_row(tsession, org, encoding):
    admin = as_user(tsession, org.admin)
    result = do_import(tsession, admin, CUSTOMERS, GOOD.replace("\n", "\r\n").encode(encoding))
    assert result.errors == []
    assert (result.total, result.imported, result.skipped) == (3, 3, 0)
    rows = {c.name: c for c in tsession.scalars(select(Customer))}
    assert rows["北京华为技术有限公司"].region == "beijing"
    assert rows["北京华为技术有限公司"].nature == "state"
    assert rows["上海电气"].level == "important"
    assert rows["上海电气"].region == "shanghai"
    assert rows["Acme Trading"].nature == "jv"
    assert rows["Acme Trading"].region == "east"
    assert rows["Acme Trading"].remark == "多行\r\n备注" or rows["Acme Trading"].remark == "多行\n备注"
    assert all(c.owner_id == org.admin and c.number.startswith("KH-") for c in rows.values())
    assert len({c.number for c in rows.values()}) == 3
    # Searchable and sorted like records made through the form.
    from crm.records import definitions, lists

    fields = definitions.fields(tsession, CUSTOMERS)
    found = lists.page(tsession, CUSTOMERS, admin, lists.parse([("q", "华为")], fields, CUSTOMERS), fields).rows
    assert [c.name for c in found] == ["北京华为技术有限公司"]
    entries = list(tsession.scalars(select(AuditEntry).where(AuditEntry.action == "customers.imported")))
    assert len(entries) == 1
    assert entries[0].after["records"] == 3
    assert entries[0].after["file"] == "customers.csv"


def test_every_kind_of_bad_row_is_reported_and_nothing_is_written(tsession, org):
    admin = as_user(tsession, org.admin)
    long_name = "长" * 201
    text = (HEADER + "\n"
            "Good one,010-1111111,,,,,\n"                   # 2: fine
            ",010-2222222,,,,,\n"                           # 3: name missing
            f"{long_name},,,,,,\n"                          # 4: too long
            "Bad phone,abc,,,,,\n"                          # 5: phone
            "Bad mail,,not-an-email,,,,\n"                  # 6: email
            "Bad region,,,Atlantis,,,\n"                    # 7: dictionary
            "Too wide,,,,,,,extra\n"                        # 8: more values than columns
            "Good one,,,,,,\n"                              # 9: same name as line 2
            "Phone twin,010-1111111,,,,,\n")                # 10: same phone as line 2
    result = do_import(tsession, admin, CUSTOMERS, text.encode())
    got = {(e.line, e.field) for e in result.errors}
    assert got == {(3, "name"), (4, "name"), (5, "phone"), (6, "email"), (7, "region"), (8, "_row"),
                   (9, "name"), (10, "phone")}
    assert (result.total, result.imported, result.skipped, result.bad_rows) == (9, 0, 9, 8)
    assert count(tsession, Customer) == 0
    messages = {(e.line, e.field): str(e.message) for e in result.errors}
    assert "line 2" in messages[(9, "name")]
    assert "line 2" in messages[(10, "phone")]
    assert "Atlantis" in messages[(7, "region")]
    assert result.as_json()["errors"][0] == {"line": 3, "field": "name", "message": "Required."}


def test_short_row_missing_a_required_column_says_so(tsession, org):
    admin = as_user(tsession, org.admin)
    result = do_import(tsession, admin, CUSTOMERS, "联系电话,客户名称\n010-1234567\n".encode())
    assert [(e.line, e.field) for e in result.errors] == [(2, "name")]
    assert "ends after 1" in str(result.errors[0].message)


def test_skip_invalid_imports_the_good_rows(tsession, org):
    admin = as_user(tsession, org.admin)
    text = HEADER + "\nGood A,,,,,,\n,,,,,,oops no name\nGood B,,bad-mail,,,,\nGood C,,c@x.example,,,,\n"
    result = do_import(tsession, admin, CUSTOMERS, text.encode(), skip_invalid=True)
    assert (result.total, result.imported, result.skipped) == (4, 2, 2)
    assert sorted(c.name for c in tsession.scalars(select(Customer))) == ["Good A", "Good C"]


def test_dry_run_writes_nothing_and_says_what_would_happen(tsession, org):
    admin = as_user(tsession, org.admin)
    before = tsession.scalar(select(func.count()).select_from(AuditEntry))
    result = do_import(tsession, admin, CUSTOMERS, GOOD.encode(), dry_run=True)
    assert (result.total, result.imported, result.skipped, result.errors) == (3, 3, 0, [])
    assert count(tsession, Customer) == 0
    assert tsession.scalar(select(func.count()).select_from(AuditEntry)) == before
    # The numbers were not taken either: the first real customer is still number 1.
    first = services.create(tsession, admin, CUSTOMERS, {"name": "After the dry run"})
    assert first.number.endswith("-00001")


def test_duplicates_of_existing_records_are_errors_visible_ones_only(tsession, org):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    manager = as_user(tsession, org.manager)
    services.create(tsession, a, CUSTOMERS, {"name": "深圳腾飞科技", "phone": "0755-8888888"})
    services.create(tsession, b, CUSTOMERS, {"name": "B's secret", "email": "b@secret.example"})
    far = as_user(tsession, org.rep_far)
    services.create(tsession, far, CUSTOMERS, {"name": "Far away", "email": "far@x.example"})
    text = (HEADER + "\n深圳腾飞科技,,,,,,\nOther name,0755-8888888,,,,,\nFresh,,,,,,\n"
            "Far away,,far@x.example,,,,\n")
    result = do_import(tsession, manager, CUSTOMERS, text.encode())
    assert {(e.line, e.field) for e in result.errors} == {(2, "name"), (3, "phone")}
    assert "KH-" in str(result.errors[0].message)  # names the record the manager can open
    # Line 5 duplicates a record of another branch: the manager cannot see it, so is not told of it.
    assert result.bad_rows == 2


def test_number_column_keeps_codes_and_refuses_taken_ones(tsession, org):
    admin = as_user(tsession, org.admin)
    services.create(tsession, admin, CUSTOMERS, {"name": "Existing"})  # KH-yyyy-00001
    existing = tsession.scalar(select(Customer.number))
    text = f"客户代码,客户名称\nC-001,Alpha\n,Beta\nC-001,Gamma\n{existing},Delta\n"
    result = do_import(tsession, admin, CUSTOMERS, text.encode())
    assert {(e.line, e.field) for e in result.errors} == {(4, "number"), (5, "number")}
    result = do_import(tsession, admin, CUSTOMERS, "客户代码,客户名称\nC-001,Alpha\n,Beta\n".encode())
    assert result.imported == 2
    numbers = dict(tsession.execute(select(Customer.name, Customer.number)).all())
    assert numbers["Alpha"] == "C-001"
    assert numbers["Beta"].endswith("-00002")


def test_number_format_and_sequence_continue_after_an_import(tsession, org):
    admin = as_user(tsession, org.admin)
    tsession.add(NumberFormat(entity="customers", pattern="C{yy}-{seq:04}"))
    tsession.flush()
    do_import(tsession, admin, CUSTOMERS, "客户名称\nOne\nTwo\nThree\n".encode())
    after = services.create(tsession, admin, CUSTOMERS, {"name": "Four"})
    numbers = sorted(tsession.scalars(select(Customer.number)))
    assert after.number.endswith("-0004")
    assert len(set(numbers)) == 4
    assert numbers[0].endswith("-0001")


def test_contacts_refer_to_customers_by_number_or_exact_name(tsession, org):
    admin = as_user(tsession, org.admin)
    hw = services.create(tsession, admin, CUSTOMERS, {"name": "华为"})
    services.create(tsession, admin, CUSTOMERS, {"name": "Twin"})
    services.create(tsession, admin, CUSTOMERS, {"name": "Twin", "phone": "010-7777777"})
    text = (f"姓名,公司名称,手机,生日,性别,主要联系人\n"
            f"王工,{hw.number},13800000001,1990-01-02,男,是\n"
            f"李工,华为,13800000002,1990年3月4日,female,否\n"
            f"赵工,Twin,13800000003,,,\n"
            f"钱工,Nobody Inc,13800000004,,,\n"
            f"孙工,,13800000005,someday,unknown,\n")
    result = do_import(tsession, admin, CONTACTS, text.encode())
    assert {(e.line, e.field) for e in result.errors} == {(4, "customer_id"), (5, "customer_id"),
                                                          (6, "birthday"), (6, "gender")}
    assert "number" in str(next(e for e in result.errors if e.line == 4).message)
    result = do_import(tsession, admin, CONTACTS, text.encode(), skip_invalid=True)
    assert result.imported == 2
    rows = {c.name: c for c in tsession.scalars(select(Contact))}
    assert rows["王工"].customer_id == hw.id
    assert rows["李工"].customer_id == hw.id
    assert rows["王工"].is_primary is True
    assert rows["李工"].is_primary is False
    assert rows["李工"].gender == "f"
    assert str(rows["李工"].birthday) == "1990-03-04"


def test_same_contact_name_at_another_customer_is_not_a_duplicate(tsession, org):
    admin = as_user(tsession, org.admin)
    one = services.create(tsession, admin, CUSTOMERS, {"name": "One"})
    two = services.create(tsession, admin, CUSTOMERS, {"name": "Two"})
    services.create(tsession, admin, CONTACTS, {"name": "张伟", "customer_id": str(one.id)})
    text = f"姓名,客户\n张伟,{two.number}\n张伟,{one.number}\n"
    result = do_import(tsession, admin, CONTACTS, text.encode())
    assert [(e.line, e.field) for e in result.errors] == [(3, "name")]


def test_owner_column_needs_the_transfer_permission(tsession, org):
    manager, rep = as_user(tsession, org.manager), as_user(tsession, org.rep_a)
    text = "客户名称,负责人\nFor B,rep_b@acme.test\nFor me,Manager 王经理\nNobody's,ghost@acme.test\n"
    result = do_import(tsession, manager, CUSTOMERS, text.encode(), skip_invalid=True)
    assert [(e.line, e.field) for e in result.errors] == [(4, "owner_id")]
    owners = dict(tsession.execute(select(Customer.name, Customer.owner_id)).all())
    assert owners == {"For B": org.rep_b, "For me": org.manager}
    dept = tsession.scalar(select(Customer.department_id).where(Customer.name == "For B"))
    assert dept == org.east_dept
    # A rep may not import at all by default; given the right, still not for someone else.
    with pytest.raises(PermissionDenied):
        do_import(tsession, rep, CUSTOMERS, text.encode())


def test_xlsx_and_broken_files(tsession, org):
    from openpyxl import Workbook

    admin = as_user(tsession, org.admin)
    book = Workbook()
    sheet = book.active
    sheet.append(["客户名称", "联系电话", "所在地区"])
    sheet.append(["表格客户", 13800138000, "浙江"])
    out = io.BytesIO()
    book.save(out)
    result = do_import(tsession, admin, CUSTOMERS, out.getvalue(), "customers.xlsx")
    assert result.imported == 1
    row = tsession.scalar(select(Customer))
    assert (row.name, row.phone, row.region) == ("表格客户", "13800138000", "zhejiang")
    for data, name, code in ((b"", "x.csv", "file_empty"), (b"PK\x03\x04garbage", "x.xlsx", "corrupt"),
                             (b"\x00\x01\x02binary", "x.csv", "not_text"), (b"a,b\n1,2\n", "x.pdf",
                                                                            "unsupported_format")):
        with pytest.raises(tabular.FileRejected) as exc:
            do_import(tsession, admin, CUSTOMERS, data, name)
        assert exc.value.code == code


# --------------------------------------------------------------------------- export


def export_rows(session, viewer, ent, params=(), fmt="csv"):
    from crm.records import exporting

    plan = exporting.prepare(session, viewer, ent, list(params), fmt=fmt)
    data = b"".join(exporting.chunks(plan, exporting.rows(session, plan)))
    table = tabular.read_table(data, plan.filename, max_rows=10_000, max_bytes=10 << 20)
    with table:
        return data, table.headers, [cells for _line, cells in table.rows]


def test_export_is_what_the_viewer_may_see_with_the_lists_filters(tsession, org):
    a, b = as_user(tsession, org.rep_a, "zh"), as_user(tsession, org.rep_b)
    services.create(tsession, a, CUSTOMERS, {"name": "甲方北京", "region": "beijing", "level": "vip",
                                             "phone": "010-1234567"})
    services.create(tsession, a, CUSTOMERS, {"name": "甲方上海", "region": "shanghai"})
    services.create(tsession, b, CUSTOMERS, {"name": "乙方北京", "region": "beijing"})
    data, headers, rows = export_rows(tsession, a, CUSTOMERS, [("columns", "name,region,level,owner_id")])
    assert data.startswith(codecs.BOM_UTF8)
    assert headers == ["客户名称", "所在地区", "客户级别", "负责人"]
    assert sorted(rows) == [["甲方上海", "上海", "", "Rep A 张三"], ["甲方北京", "北京", "VIP客户", "Rep A 张三"]]
    _data, _headers, rows = export_rows(tsession, a, CUSTOMERS, [("region", "beijing"), ("columns", "name")])
    assert rows == [["甲方北京"]]
    _data, _headers, rows = export_rows(tsession, b, CUSTOMERS, [("q", "北京"), ("columns", "name")])
    assert rows == [["乙方北京"]]
    entries = list(tsession.scalars(select(AuditEntry).where(AuditEntry.action == "customers.exported")))
    assert len(entries) == 3


def test_export_of_all_fields_imports_back(tsession, org):
    admin = as_user(tsession, org.admin)
    do_import(tsession, admin, CUSTOMERS, GOOD.encode())
    for fmt in ("csv", "xlsx"):
        data, headers, rows = export_rows(tsession, admin, CUSTOMERS, fmt=fmt)
        assert "Customer name" in headers
        assert "Number" in headers
        assert len(rows) == 3
        # Into another tenant's shape: delete, then import the export; names, regions and numbers come back.
        result = do_import(tsession, admin, CUSTOMERS, data, f"again.{fmt}", dry_run=True)
        assert {(e.field) for e in result.errors} >= {"number"}  # the same numbers exist already


def test_export_needs_the_permission_and_usable_parameters(tsession, org):
    from dataclasses import replace

    from core.errors import ValidationFailed
    from crm.records import exporting

    admin = as_user(tsession, org.admin)
    no_export = replace(admin, actor=replace(admin.actor, permissions=admin.actor.permissions - {"customers.export"}))
    with pytest.raises(PermissionDenied):
        exporting.prepare(tsession, no_export, CUSTOMERS, [])
    with pytest.raises(ValidationFailed):
        exporting.prepare(tsession, admin, CUSTOMERS, [("nosuch", "1")])
    with pytest.raises(ValidationFailed):
        exporting.prepare(tsession, admin, CUSTOMERS, [], fmt="pdf")


# --------------------------------------------------------------------------- jobs


def test_a_job_runs_through_the_outbox_and_reports_its_result(db, org):
    from crm.records import import_jobs

    data = GOOD.encode()
    with db.transaction(org.tenant) as s:
        admin = as_user(s, org.admin)
        job, table = import_jobs.create(s, admin, CUSTOMERS, data, "big.csv", max_rows=1000, max_bytes=1 << 20)
        table.close()
        import_jobs.start(s, admin, job, dry_run=False, skip_invalid=False)
        job_id = job.id
    # The commit handed the task over (run in place by the test-suite's eager Celery).
    with db.transaction(org.tenant) as s:
        admin = as_user(s, org.admin)
        job = import_jobs.get(s, admin, job_id)
        assert job.status == "done"
        assert job.result["imported"] == 3 and job.result["errors"] == []
        assert s.scalar(select(import_jobs.ImportJob.data).where(import_jobs.ImportJob.id == job_id)) is None
        assert count(s, Customer) == 3
        # Another user does not know the job exists.
        with pytest.raises(Exception) as exc:
            import_jobs.get(s, as_user(s, org.manager), job_id)
        assert type(exc.value).__name__ == "NotFound"


class WorkerKilled(BaseException):
    """What a SIGKILL looks like to the code that was running: nothing after it runs."""


def test_a_job_killed_halfway_imports_once_when_it_runs_again(db, org, monkeypatch):
    from crm.records import import_jobs

    rows = "\n".join(f"Customer {i},010-{1000000 + i}" for i in range(25))
    data = ("客户名称,联系电话\n" + rows + "\n").encode()
    with db.transaction(org.tenant) as s:
        admin = as_user(s, org.admin)
        job, table = import_jobs.create(s, admin, CUSTOMERS, data, "big.csv", max_rows=1000, max_bytes=1 << 20)
        table.close()
        job.status = "queued"  # as start() leaves it, without running the task now
        job_id = job.id
    monkeypatch.setattr(importing, "BATCH", 10)
    real_copy = importing._copy
    calls = []

    def dying_copy(session, sql, batch):
        calls.append(len(batch))
        real_copy(session, sql, batch)
        if len(calls) == 2:
            raise WorkerKilled

    monkeypatch.setattr(importing, "_copy", dying_copy)
    with pytest.raises(WorkerKilled):
        import_jobs.run_import(str(org.tenant.id), str(job_id))
    with db.transaction(org.tenant) as s:
        assert count(s, Customer) == 0  # the half-done import was rolled back with its transaction
        assert s.get(import_jobs.ImportJob, job_id).status in ("queued", "running")
    monkeypatch.setattr(importing, "_copy", real_copy)
    import_jobs.run_import(str(org.tenant.id), str(job_id))  # the message is delivered again
    import_jobs.run_import(str(org.tenant.id), str(job_id))  # and once more, by a late duplicate
    with db.transaction(org.tenant) as s:
        assert count(s, Customer) == 25
        job = s.get(import_jobs.ImportJob, job_id)
        assert job.status == "done" and job.result["imported"] == 25


def test_a_job_with_a_broken_file_is_refused_at_upload(db, org):
    from crm.records import import_jobs

    with db.transaction(org.tenant) as s:
        admin = as_user(s, org.admin)
        with pytest.raises(tabular.FileRejected):
            import_jobs.create(s, admin, CUSTOMERS, b"PK\x03\x04junk", "x.xlsx", max_rows=10, max_bytes=1 << 20)
        with pytest.raises(tabular.FileRejected):
            import_jobs.create(s, admin, CUSTOMERS, b"x" * 2000, "x.csv", max_rows=10, max_bytes=1000)
