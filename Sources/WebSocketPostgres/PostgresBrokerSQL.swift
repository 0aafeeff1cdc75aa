import Foundation
import PostgresNIO

/// The broker's SQL: one table of publications, one row of retention state, one function that
/// stores a batch and announces it. Names derive from the configured table name, which is
/// checked to be a plain identifier (it is spliced into the SQL; everything else is bound).
///
/// Why it is safe to read by `id > last seen`: every batch is inserted while holding one
/// transaction-level advisory lock, so ids are assigned in commit order and the lock is
/// released only after the commit is visible; a reader that sees id N has seen every smaller
/// id. A batch sent again after a lost connection (its commit unknown) is stored once:
/// `UNIQUE (incarnation, node, seq)` with `ON CONFLICT DO NOTHING`, where the incarnation is a
/// random UUID of the broker object (a process restarted under the same node name is another
/// incarnation, whose sequence numbers start again at 1 without colliding with the old ones).
struct PostgresBrokerSQL: Sendable {
    let table: String

    var retentionTable: String { table + "_retention" }
    var publishFunction: String { table + "_publish" }
    /// The NOTIFY channel: the table's name.
    var channel: String { table }
    /// The function applications call to publish from their own transaction:
    /// `websocket_publish` for the default table, `<table>_send` for another.
    var applicationFunction: String { table == "websocket_publications" ? "websocket_publish" : table + "_send" }

    static func isValidIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 48 else { return false }
        guard (first >= UInt8(ascii: "a") && first <= UInt8(ascii: "z")) || first == UInt8(ascii: "_") else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
        }
    }

    /// Creates what is missing, under a lock so that nodes starting together do not collide.
    var schema: [String] {
        [
            "SELECT pg_advisory_xact_lock(hashtext('\(table)'))",
            """
            CREATE TABLE IF NOT EXISTS \(table) (
                id bigserial PRIMARY KEY,
                node text NOT NULL,
                seq bigint NOT NULL,
                topic text NOT NULL,
                opcode smallint NOT NULL,
                payload bytea NOT NULL,
                published_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                incarnation uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
            )
            """,
            // Tables of the first version: (node, seq) was the key, so a node restarted under its
            // name had its publications dropped as duplicates. Rows of then keep the zero
            // incarnation (unique by node and seq already).
            "ALTER TABLE \(table) ADD COLUMN IF NOT EXISTS incarnation uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'",
            "ALTER TABLE \(table) DROP CONSTRAINT IF EXISTS \(table)_node_seq_key",
            "CREATE UNIQUE INDEX IF NOT EXISTS \(table)_dedup ON \(table) (incarnation, node, seq)",
            "DROP FUNCTION IF EXISTS \(publishFunction)(text, int8[], text[], int2[], bytea[])",
            "CREATE INDEX IF NOT EXISTS \(table)_published_at ON \(table) (published_at)",
            """
            CREATE TABLE IF NOT EXISTS \(retentionTable) (
                single boolean PRIMARY KEY DEFAULT true CHECK (single),
                deleted_through bigint NOT NULL
            )
            """,
            "INSERT INTO \(retentionTable) (single, deleted_through) VALUES (true, 0) ON CONFLICT DO NOTHING",
            """
            CREATE OR REPLACE FUNCTION \(publishFunction)(p_node text, p_seqs int8[], p_topics text[], p_opcodes int2[], p_payloads bytea[],
                p_incarnation uuid DEFAULT '00000000-0000-0000-0000-000000000000')
            RETURNS int8 LANGUAGE plpgsql AS $body$
            DECLARE prev_id int8; last_id int8; note text;
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext('\(table)'));
                SELECT coalesce(max(id), 0) INTO prev_id FROM \(table);
                INSERT INTO \(table) (incarnation, node, seq, topic, opcode, payload)
                    SELECT p_incarnation, p_node, u.s, u.t, u.o, u.p
                    FROM unnest(p_seqs, p_topics, p_opcodes, p_payloads) WITH ORDINALITY AS u(s, t, o, p, n)
                    ORDER BY u.n
                    ON CONFLICT (incarnation, node, seq) DO NOTHING;
                SELECT coalesce(max(id), 0) INTO last_id FROM \(table);
                -- The newest id, the one before this batch, the incarnation and the batch's
                -- topics: a node that has read up to prev_id and has no subscriber of these
                -- topics (or published them itself) needs no read for them.
                note := json_build_object('l', last_id, 'p', prev_id, 'i', p_incarnation,
                    't', (SELECT array_agg(DISTINCT t) FROM unnest(p_topics) AS t))::text;
                IF octet_length(note) > 7900 THEN
                    note := json_build_object('l', last_id)::text;
                END IF;
                PERFORM pg_notify('\(channel)', note);
                RETURN last_id;
            END
            $body$
            """,
            // Publishing from the application's own transaction (the transactional outbox): the
            // row and its NOTIFY become visible when that transaction commits, and never when it
            // rolls back. With a key, the row's identity is the key's (incarnation = md5 of it,
            // node 'sql', seq 0): the same key again while the first is in the table stores
            // nothing and returns NULL. The advisory lock (ids in commit order) is held until
            // the caller's commit: publish last in a short transaction.
            """
            CREATE OR REPLACE FUNCTION \(table)_publish_one(p_topic text, p_opcode int2, p_payload bytea, p_key text)
            RETURNS int8 LANGUAGE plpgsql AS $body$
            DECLARE prev_id int8; new_id int8; who uuid; note text;
            BEGIN
                IF p_topic IS NULL OR p_payload IS NULL THEN
                    RAISE EXCEPTION '\(applicationFunction): topic and payload must not be NULL' USING ERRCODE = '22004';
                END IF;
                IF octet_length(p_topic) > 1024 THEN
                    RAISE EXCEPTION '\(applicationFunction): a topic name has at most 1024 bytes' USING ERRCODE = '22023';
                END IF;
                who := CASE WHEN p_key IS NULL THEN gen_random_uuid() ELSE md5('key:' || p_key)::uuid END;
                PERFORM pg_advisory_xact_lock(hashtext('\(table)'));
                SELECT coalesce(max(id), 0) INTO prev_id FROM \(table);
                INSERT INTO \(table) (incarnation, node, seq, topic, opcode, payload)
                    VALUES (who, 'sql', 0, p_topic, p_opcode, p_payload)
                    ON CONFLICT (incarnation, node, seq) DO NOTHING
                    RETURNING id INTO new_id;
                IF new_id IS NOT NULL THEN
                    note := json_build_object('l', new_id, 'p', prev_id, 'i', who, 't', json_build_array(p_topic))::text;
                    IF octet_length(note) > 7900 THEN note := json_build_object('l', new_id)::text; END IF;
                    PERFORM pg_notify('\(channel)', note);
                END IF;
                RETURN new_id;
            END
            $body$
            """,
            """
            CREATE OR REPLACE FUNCTION \(applicationFunction)(p_topic text, p_payload bytea, p_key text DEFAULT NULL)
            RETURNS int8 LANGUAGE sql AS $body$ SELECT \(table)_publish_one(p_topic, 2::int2, p_payload, p_key) $body$
            """,
            """
            CREATE OR REPLACE FUNCTION \(applicationFunction)(p_topic text, p_payload text, p_key text DEFAULT NULL)
            RETURNS int8 LANGUAGE sql AS $body$ SELECT \(table)_publish_one(p_topic, 1::int2, convert_to(p_payload, 'UTF8'), p_key) $body$
            """,
        ]
    }

    /// Stores a batch (in order) and NOTIFYs the highest id, in one transaction.
    func publish(node: String, incarnation: UUID, batch: some Collection<PostgresBrokerItem>) -> PostgresQuery {
        let seqs = batch.map(\.seq)
        let topics = batch.map(\.topic)
        let opcodes = batch.map(\.opcode)
        let payloads = batch.map(\.payload)
        var bindings = PostgresBindings(capacity: 6)
        bindings.append(node)
        bindings.append(seqs)
        bindings.append(topics)
        bindings.append(opcodes)
        bindings.append(payloads)
        bindings.append(incarnation)
        return PostgresQuery(unsafeSQL: "SELECT \(publishFunction)($1, $2, $3, $4, $5, $6)", binds: bindings)
    }

    /// The highest id stored (where a new node starts reading) and how far retention deleted.
    var position: PostgresQuery {
        PostgresQuery(unsafeSQL: "SELECT coalesce((SELECT max(id) FROM \(table)), 0)::int8, (SELECT deleted_through FROM \(retentionTable))")
    }

    /// How far retention deleted.
    var deletedThrough: PostgresQuery {
        PostgresQuery(unsafeSQL: "SELECT deleted_through FROM \(retentionTable)")
    }

    /// The rows after `lastSeen`, in id order: the payload only of other incarnations' rows
    /// whose topic has a subscriber here (the others cost this node a few bytes of row each).
    /// A page: at most `limit` rows, and no row past the one that takes the page's payloads to
    /// `maxBytes` (the first row always comes, whatever its size), so that a catch-up after a
    /// long outage holds one page in memory, not 1,000 rows of any size. The last column is the
    /// number of rows the page had before the byte bound: more than came back, or `limit`,
    /// means there may be more to read.
    func fetch(after lastSeen: Int64, incarnation: UUID, topics: [String], limit: Int, maxBytes: Int) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(incarnation)
        bindings.append(topics)
        bindings.append(lastSeen)
        bindings.append(Int64(limit))
        bindings.append(Int64(maxBytes))
        return PostgresQuery(unsafeSQL: """
            SELECT id, own, topic, opcode, payload, page_rows FROM (
                SELECT id, own, topic, opcode, CASE WHEN wanted THEN payload END AS payload,
                    coalesce(sum(CASE WHEN wanted THEN octet_length(payload) END)
                        OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bytes_before,
                    count(*) OVER () AS page_rows
                FROM (
                    SELECT id, incarnation = $1 AS own, incarnation <> $1 AND topic = ANY($2) AS wanted, topic, opcode, payload
                    FROM \(table) WHERE id > $3 ORDER BY id LIMIT $4
                ) AS page
            ) AS bounded
            WHERE bytes_before < $5 ORDER BY id
            """, binds: bindings)
    }

    /// Deletes the rows older than `seconds` (a prefix of ids: the newest id old enough, and all
    /// before it) and records how far; returns that id.
    func deleteExpired(olderThan seconds: Double) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(seconds)
        return PostgresQuery(unsafeSQL: """
            WITH cut AS (SELECT max(id) AS id FROM \(table) WHERE published_at < clock_timestamp() - make_interval(secs => $1)),
                 deleted AS (DELETE FROM \(table) WHERE id <= (SELECT id FROM cut))
            UPDATE \(retentionTable) SET deleted_through = greatest(deleted_through, coalesce((SELECT id FROM cut), 0))
            RETURNING deleted_through
            """, binds: bindings)
    }
}
