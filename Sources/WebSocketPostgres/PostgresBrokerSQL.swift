import PostgresNIO

/// The broker's SQL: one table of publications, one row of retention state, one function that
/// stores a batch and announces it. Names derive from the configured table name, which is
/// checked to be a plain identifier (it is spliced into the SQL; everything else is bound).
///
/// Why it is safe to read by `id > last seen`: every batch is inserted while holding one
/// transaction-level advisory lock, so ids are assigned in commit order and the lock is
/// released only after the commit is visible; a reader that sees id N has seen every smaller
/// id. A batch sent again after a lost connection (its commit unknown) is stored once:
/// `UNIQUE (node, seq)` with `ON CONFLICT DO NOTHING`.
struct PostgresBrokerSQL: Sendable {
    let table: String

    var retentionTable: String { table + "_retention" }
    var publishFunction: String { table + "_publish" }
    /// The NOTIFY channel: the table's name.
    var channel: String { table }

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
                UNIQUE (node, seq)
            )
            """,
            "CREATE INDEX IF NOT EXISTS \(table)_published_at ON \(table) (published_at)",
            """
            CREATE TABLE IF NOT EXISTS \(retentionTable) (
                single boolean PRIMARY KEY DEFAULT true CHECK (single),
                deleted_through bigint NOT NULL
            )
            """,
            "INSERT INTO \(retentionTable) (single, deleted_through) VALUES (true, 0) ON CONFLICT DO NOTHING",
            """
            CREATE OR REPLACE FUNCTION \(publishFunction)(p_node text, p_seqs int8[], p_topics text[], p_opcodes int2[], p_payloads bytea[])
            RETURNS int8 LANGUAGE plpgsql AS $body$
            DECLARE prev_id int8; last_id int8; note text;
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext('\(table)'));
                SELECT coalesce(max(id), 0) INTO prev_id FROM \(table);
                INSERT INTO \(table) (node, seq, topic, opcode, payload)
                    SELECT p_node, u.s, u.t, u.o, u.p
                    FROM unnest(p_seqs, p_topics, p_opcodes, p_payloads) WITH ORDINALITY AS u(s, t, o, p, n)
                    ORDER BY u.n
                    ON CONFLICT (node, seq) DO NOTHING;
                SELECT coalesce(max(id), 0) INTO last_id FROM \(table);
                -- The newest id, the one before this batch, the node and the batch's topics: a
                -- node that has read up to prev_id and has no subscriber of these topics (or
                -- published them itself) moves on to last_id without a read.
                note := json_build_object('l', last_id, 'p', prev_id, 'n', p_node,
                    't', (SELECT array_agg(DISTINCT t) FROM unnest(p_topics) AS t))::text;
                IF octet_length(note) > 7900 THEN
                    note := json_build_object('l', last_id)::text;
                END IF;
                PERFORM pg_notify('\(channel)', note);
                RETURN last_id;
            END
            $body$
            """,
        ]
    }

    /// Stores a batch (in order) and NOTIFYs the highest id, in one transaction.
    func publish(node: String, batch: some Collection<PostgresBrokerItem>) -> PostgresQuery {
        let seqs = batch.map(\.seq)
        let topics = batch.map(\.topic)
        let opcodes = batch.map(\.opcode)
        let payloads = batch.map(\.payload)
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(node)
        bindings.append(seqs)
        bindings.append(topics)
        bindings.append(opcodes)
        bindings.append(payloads)
        return PostgresQuery(unsafeSQL: "SELECT \(publishFunction)($1, $2, $3, $4, $5)", binds: bindings)
    }

    /// The highest id stored (where a new node starts reading) and how far retention deleted.
    var position: PostgresQuery {
        PostgresQuery(unsafeSQL: "SELECT coalesce((SELECT max(id) FROM \(table)), 0)::int8, (SELECT deleted_through FROM \(retentionTable))")
    }

    /// How far retention deleted.
    var deletedThrough: PostgresQuery {
        PostgresQuery(unsafeSQL: "SELECT deleted_through FROM \(retentionTable)")
    }

    /// The rows after `lastSeen`, in id order: the payload only of other nodes' rows whose topic
    /// has a subscriber here (the others cost this node a few bytes of row each).
    func fetch(after lastSeen: Int64, node: String, topics: [String], limit: Int) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(node)
        bindings.append(topics)
        bindings.append(lastSeen)
        bindings.append(Int64(limit))
        return PostgresQuery(unsafeSQL: """
            SELECT id, node = $1, topic, opcode, CASE WHEN node <> $1 AND topic = ANY($2) THEN payload END
            FROM \(table) WHERE id > $3 ORDER BY id LIMIT $4
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
