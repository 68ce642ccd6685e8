"""The operator page (issue 16, item 6): ``page`` serves ``/operator``, server-rendered HTML behind the operator key."""
