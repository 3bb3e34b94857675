"""Production validation: scenarios that say whether a deployment of M1 is ready for production.

``scenario`` holds the vocabulary and runner, one small module per group holds its scenarios
(config, database, redis, api, security, performance), ``slo`` the targets file, ``target`` the
deployment under test and its secrets, ``suite`` the registry and the report. Used by
`m1 validate production` and the production-validation flow; no Prefect import here.
"""
