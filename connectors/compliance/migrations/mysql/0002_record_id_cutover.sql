-- Settings the compliance archive keeps about itself. `ordered_record_ids_after`: records
-- later than this time (µs since the epoch) get time-ordered record ids; earlier ones keep
-- the legacy form, which an older sink may have written already (set by the sink at its
-- first start with this table).
CREATE TABLE IF NOT EXISTS imbus_compliance_meta (
    name  VARCHAR(64)  NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=ascii;
