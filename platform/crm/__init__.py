"""The CRM: the record foundation (records), then the records themselves, one package per area.

Floors inside crm, lowest first: ``records`` ← ``accounts`` (customers, contacts) ← ``activities``
(activities, tasks, calendar) ← ``home``. Later areas (sales, service) sit above them.
"""
