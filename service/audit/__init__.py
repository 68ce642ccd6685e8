"""The durable audit log of guard decisions (issue 16, item 4).

* ``log``: ``AuditLog`` writes one record per guarded request into the tenancy database
  (``service.tenancy.db``) and reads them back; ``build_record`` turns a request scope into a record.
* ``report``: the shadow report (what each policy would have blocked, per category) and its PNG chart.
* ``cli``: ``spaguard audit export|report``.
"""
