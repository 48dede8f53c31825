-- Lookups of one key across a service's users (kv `find`: a share id
-- answered on a public route names its owner).
CREATE INDEX service_kv_by_key ON service_kv (service_id, key);
