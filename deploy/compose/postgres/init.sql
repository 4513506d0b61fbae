-- Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
-- The same databases the embedded stack (make up) creates: the core service's database, which
-- holds the outbox the core-publisher relays, and the control-plane's projection registry.
-- Temporal gets its own role; its two databases are created by the temporal-schema job.
CREATE DATABASE core;
CREATE DATABASE controlplane;
CREATE ROLE temporal LOGIN CREATEDB PASSWORD 'temporal';
