-- Registry schema v6 (SQLite): one account of a module belongs to one gateway
-- user. Before, accounts were unique per user only, so a second user could
-- bind someone else's account and have pushes sent in their name. Where two
-- users hold the same account, the oldest binding stays; the later ones are
-- removed, each with an audit event naming it, so the operator can tell
-- their users (the connector now makes each binding prove the account).
INSERT INTO audit_events (at, actor, action, subject, detail)
SELECT CAST(strftime('%s', 'now') AS BIGINT) * 1000, 'migration', 'binding.delete', b.id,
       json_object('user', b.user_id, 'module', b.module_id, 'account', b.account,
                   'reason', 'bound by an older binding of another user (migration 0006)')
FROM bindings b
WHERE EXISTS (
    SELECT 1 FROM bindings o
    WHERE o.module_id = b.module_id AND o.account = b.account
      AND (o.created_at < b.created_at OR (o.created_at = b.created_at AND o.id < b.id))
);
DELETE FROM bindings
WHERE EXISTS (
    SELECT 1 FROM bindings o
    WHERE o.module_id = bindings.module_id AND o.account = bindings.account
      AND (o.created_at < bindings.created_at
           OR (o.created_at = bindings.created_at AND o.id < bindings.id))
);
CREATE UNIQUE INDEX bindings_module_account_key ON bindings (module_id, account);
