-- First start of the compose PostgreSQL: Prefect's own database beside M1's (POSTGRES_DB).
-- M1's database is also created by `m1 staging setup` when missing; Prefect's is not.
CREATE DATABASE prefect;
