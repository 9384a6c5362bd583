-- Record each tenant's latest written position per stream inside the very transaction that
-- inserts the events (which already holds the event table's lock): a write can't be
-- acknowledged without its position, nor its position recorded without the write.
-- Stream ids are '<kind>:<tenant>:<entity id>'; only published kinds have read models.
CREATE FUNCTION record_written_positions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO written_positions (tenant_id, stream, position)
    SELECT split_part(originator_id, ':', 2), split_part(originator_id, ':', 1),
           max(notification_id)
    FROM new_events
    WHERE split_part(originator_id, ':', 1) IN ('customer', 'service')
    GROUP BY 1, 2
    ON CONFLICT (tenant_id, stream) DO UPDATE
        SET position = GREATEST(written_positions.position, EXCLUDED.position);
    RETURN NULL;
END
$$;

CREATE TRIGGER panel_events_written_positions
    AFTER INSERT ON panel_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION record_written_positions();
