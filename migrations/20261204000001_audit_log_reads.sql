-- GET /admin/audit-logs reads the trail oldest first, by product or over everything, and
-- pages by (occurred_at, event_id). A buyer's entries are found through their slots
-- (purchase_slots_by_user, then slot_audit_log_by_slot).
CREATE INDEX slot_audit_log_by_product ON slot_audit_log (product_id, occurred_at, event_id);
CREATE INDEX slot_audit_log_by_time ON slot_audit_log (occurred_at, event_id);
