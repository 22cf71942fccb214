/*
 * toll: the ledger's schema, version TOLL_LEDGER_SCHEMA_VERSION
 * (docs/settle.md).  Amounts are INTEGER micro-units; times are unix
 * seconds unless the column says _ms.  The CHECKs and triggers are the
 * ledger's own guard against a program that would write a wrong row.
 */

#ifndef _TOLL_LEDGER_SCHEMA_H_INCLUDED_
#define _TOLL_LEDGER_SCHEMA_H_INCLUDED_

/*
 * The two tables whose CHECKs changed in version 2, by name: the schema
 * creates them as they are, the migration from version 1 as new tables
 * it fills and renames (toll_ledger.c, SQLite's 12-step ALTER).
 *
 * Version 2: prepaid balances (docs/settle.md).  An account may be a
 * buyer's prepaid liability; a transaction may be a credit, debit or
 * refund of one, with its buyer, ref (unique per buyer) and currency and
 * no provider (version 1's provider NOT NULL is now the CHECK that a
 * provider is there exactly when no ref is); a usage transaction keeps
 * what the balance paid of it; balance alerts sent are kept
 * (TOLL_LEDGER_BALANCE_ALERTS_SQL).
 */
#define TOLL_LEDGER_ACCOUNTS_SQL(t)                                          \
"CREATE TABLE " t " ("                                                       \
"  id   INTEGER PRIMARY KEY,"                                                \
"  name TEXT NOT NULL UNIQUE,"                                               \
"  kind TEXT NOT NULL"                                                       \
"       CHECK (kind IN ('buyer', 'provider', 'platform', 'prepaid'))"        \
") STRICT;"

#define TOLL_LEDGER_TRANSACTIONS_SQL(t)                                      \
"CREATE TABLE " t " ("                                                       \
"  id            INTEGER PRIMARY KEY,"                                       \
"  kind          TEXT NOT NULL CHECK (kind IN ('usage', 'payout',"           \
"                'credit', 'debit', 'refund')),"                             \
"  batch_id      TEXT REFERENCES batches (id),"                              \
"  settlement_id TEXT REFERENCES settlements (id),"                          \
"  posted_at     INTEGER NOT NULL,"                                          \
"  buyer         TEXT,"                                                      \
"  provider      TEXT,"                                                      \
"  service       TEXT,"                                                      \
"  day           TEXT,"                                                      \
"  calls         INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),"             \
"  free_calls    INTEGER NOT NULL DEFAULT 0 CHECK (free_calls >= 0),"        \
"  paid_calls    INTEGER NOT NULL DEFAULT 0 CHECK (paid_calls >= 0),"        \
"  errors        INTEGER NOT NULL DEFAULT 0 CHECK (errors >= 0),"            \
"  latency_ms    INTEGER NOT NULL DEFAULT 0,"                                \
"  amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),"               \
"  fee_bp        INTEGER NOT NULL DEFAULT 0"                                 \
"                CHECK (fee_bp BETWEEN 0 AND 10000),"                        \
"  fee_micros    INTEGER NOT NULL DEFAULT 0"                                 \
"                CHECK (fee_micros BETWEEN 0 AND amount_micros),"            \
"  ref           TEXT,"                                                      \
"  currency      TEXT,"                                                      \
"  prepaid_micros INTEGER NOT NULL DEFAULT 0"                                \
"                CHECK (prepaid_micros BETWEEN 0 AND amount_micros),"        \
"  CHECK ((kind = 'usage') = (batch_id IS NOT NULL)),"                       \
"  CHECK ((kind = 'payout') = (settlement_id IS NOT NULL)),"                 \
"  CHECK ((kind IN ('credit', 'debit', 'refund')) = (ref IS NOT NULL)),"     \
"  CHECK ((ref IS NULL) = (provider IS NOT NULL)),"                          \
"  CHECK (ref IS NULL OR (buyer IS NOT NULL AND currency IS NOT NULL"        \
"         AND amount_micros > 0 AND fee_micros = 0)),"                       \
"  CHECK (prepaid_micros = 0 OR (kind = 'usage' AND currency IS NOT NULL))," \
"  UNIQUE (batch_id, service)"                                               \
") STRICT;"

/* what a rebuilt transactions table needs again: indexes, its trigger */
#define TOLL_LEDGER_TRANSACTIONS_INDEXES_SQL                                 \
"CREATE INDEX transactions_provider"                                         \
"  ON transactions (provider, kind, posted_at);"                             \
"CREATE INDEX transactions_usage ON transactions (buyer, day, service);"     \
"CREATE UNIQUE INDEX transactions_balance_ref ON transactions (buyer, ref)"  \
"  WHERE ref IS NOT NULL;"                                                   \
"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions"        \
"  BEGIN SELECT RAISE(ABORT, 'ledger transactions are immutable'); END;"


/*
 * Balance alerts sent (docs/settle.md, "Balance alerts"): one row per
 * (buyer, currency, kind, credits_micros), written in the transaction of
 * its event, so that a second pass or a restart never sends one twice.
 * credits_micros is the balance's credits total when it was sent: a
 * top-up changes it, which starts a new period and re-arms the alerts.
 */
#define TOLL_LEDGER_BALANCE_ALERTS_SQL                                       \
"CREATE TABLE balance_alerts ("                                              \
"  id               INTEGER PRIMARY KEY,"                                    \
"  buyer            TEXT NOT NULL,"                                          \
"  currency         TEXT NOT NULL,"                                          \
"  kind             TEXT NOT NULL CHECK (kind IN ('low', 'exhausted')),"     \
"  credits_micros   INTEGER NOT NULL,"                                       \
"  balance_micros   INTEGER NOT NULL,"                                       \
"  threshold_micros INTEGER,"                                                \
"  event_seq        INTEGER NOT NULL REFERENCES events (seq),"               \
"  sent_at          INTEGER NOT NULL,"                                       \
"  CHECK ((kind = 'low') = (threshold_micros IS NOT NULL)),"                 \
"  UNIQUE (buyer, currency, kind, credits_micros)"                           \
") STRICT;"


/*
 * Version 3: a usage transaction keeps the units its amount was charged
 * for (docs/metering.md, "Units").  Added to version 2's table, not
 * written into it, so that the migrations from 1 and from 2 and a new
 * ledger end with the same table.
 */
#define TOLL_LEDGER_TRANSACTIONS_UNITS_SQL                                   \
"ALTER TABLE transactions ADD COLUMN"                                        \
"  units INTEGER NOT NULL DEFAULT 0 CHECK (units >= 0);"


/*
 * Spend cap alerts sent (version 3; docs/settle.md, "Spend cap
 * alerts"): one row per threshold of a cap in a period, written in the
 * transaction of its spend_cap.threshold event.  key_id is '' for a
 * buyer's cap, not NULL: SQLite's UNIQUE lets NULLs repeat.
 * period_start is the period's first day, YYYYMMDD.
 */
#define TOLL_LEDGER_CAP_ALERTS_SQL                                           \
"CREATE TABLE cap_alerts ("                                                  \
"  id           INTEGER PRIMARY KEY,"                                        \
"  buyer        TEXT NOT NULL,"                                              \
"  currency     TEXT NOT NULL,"                                              \
"  scope        TEXT NOT NULL CHECK (scope IN ('buyer', 'key')),"            \
"  key_id       TEXT NOT NULL,"                                              \
"  period       TEXT NOT NULL CHECK (period IN ('daily', 'monthly')),"       \
"  period_start TEXT NOT NULL CHECK (length(period_start) = 8),"             \
"  threshold    INTEGER NOT NULL CHECK (threshold IN (50, 80, 100)),"        \
"  cap_micros   INTEGER NOT NULL,"                                           \
"  used_micros  INTEGER NOT NULL,"                                           \
"  event_seq    INTEGER NOT NULL REFERENCES events (seq),"                   \
"  sent_at      INTEGER NOT NULL,"                                           \
"  CHECK ((scope = 'key') = (key_id <> '')),"                                \
"  UNIQUE (buyer, currency, scope, key_id, period, period_start, threshold)" \
") STRICT;"


#define TOLL_LEDGER_SCHEMA_SQL                                               \
"CREATE TABLE meta ("                                                        \
"  name  TEXT PRIMARY KEY,"                                                  \
"  value TEXT NOT NULL"                                                      \
") STRICT;"                                                                  \
                                                                             \
TOLL_LEDGER_ACCOUNTS_SQL("accounts")                                         \
                                                                             \
"CREATE TABLE batches ("                                                     \
"  id        TEXT PRIMARY KEY,"                                              \
"  claim     TEXT NOT NULL,"                                                 \
"  buyer     TEXT NOT NULL,"                                                 \
"  day       TEXT NOT NULL,"                                                 \
"  posted_at INTEGER NOT NULL,"                                              \
"  records   INTEGER NOT NULL CHECK (records >= 0)"                          \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE settlements ("                                                 \
"  id           TEXT PRIMARY KEY,"                                           \
"  provider     TEXT NOT NULL,"                                              \
"  period_start INTEGER NOT NULL,"                                           \
"  period_end   INTEGER NOT NULL CHECK (period_end > period_start),"         \
"  total_micros INTEGER NOT NULL CHECK (total_micros >= 0),"                 \
"  fee_micros   INTEGER NOT NULL CHECK (fee_micros >= 0),"                   \
"  net_micros   INTEGER NOT NULL"                                            \
"               CHECK (net_micros = total_micros - fee_micros),"             \
"  calls        INTEGER NOT NULL CHECK (calls >= 0),"                        \
"  status       TEXT NOT NULL CHECK (status IN ('pending', 'completed')),"   \
"  payment_tx   TEXT,"                                                       \
"  created_at   INTEGER NOT NULL,"                                           \
"  paid_at      INTEGER,"                                                    \
"  CHECK ((status = 'completed') = (payment_tx IS NOT NULL))"                \
") STRICT;"                                                                  \
"CREATE INDEX settlements_provider ON settlements (provider, period_start);" \
                                                                             \
TOLL_LEDGER_TRANSACTIONS_SQL("transactions")                                 \
TOLL_LEDGER_TRANSACTIONS_INDEXES_SQL                                         \
TOLL_LEDGER_TRANSACTIONS_UNITS_SQL                                           \
                                                                             \
"CREATE TABLE entries ("                                                     \
"  id            INTEGER PRIMARY KEY,"                                       \
"  tx_id         INTEGER NOT NULL REFERENCES transactions (id),"             \
"  account_id    INTEGER NOT NULL REFERENCES accounts (id),"                 \
"  debit_micros  INTEGER NOT NULL CHECK (debit_micros >= 0),"                \
"  credit_micros INTEGER NOT NULL CHECK (credit_micros >= 0),"               \
"  CHECK ((debit_micros = 0) <> (credit_micros = 0))"                        \
") STRICT;"                                                                  \
"CREATE INDEX entries_account ON entries (account_id, id);"                  \
"CREATE INDEX entries_tx ON entries (tx_id);"                                \
"CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries"                  \
"  BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END;"          \
"CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries"                  \
"  BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END;"          \
                                                                             \
"CREATE TABLE totals ("                                                      \
"  id             INTEGER PRIMARY KEY CHECK (id = 1),"                       \
"  debits_micros  INTEGER NOT NULL,"                                         \
"  credits_micros INTEGER NOT NULL,"                                         \
"  CHECK (debits_micros = credits_micros)"                                   \
") STRICT;"                                                                  \
"INSERT INTO totals VALUES (1, 0, 0);"                                       \
                                                                             \
"CREATE TABLE free_tier ("                                                   \
"  buyer         TEXT NOT NULL,"                                             \
"  service       TEXT NOT NULL,"                                             \
"  free_calls    INTEGER NOT NULL,"                                          \
"  exhausted_at  INTEGER,"                                                   \
"  PRIMARY KEY (buyer, service)"                                             \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE events ("                                                      \
"  seq        INTEGER PRIMARY KEY,"                                          \
"  id         TEXT NOT NULL UNIQUE,"                                         \
"  type       TEXT NOT NULL,"                                                \
"  created_at INTEGER NOT NULL,"                                             \
"  body       TEXT NOT NULL"                                                 \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE deliveries ("                                                  \
"  id           INTEGER PRIMARY KEY,"                                        \
"  event_seq    INTEGER NOT NULL REFERENCES events (seq),"                   \
"  url          TEXT NOT NULL,"                                              \
"  status       TEXT NOT NULL"                                               \
"               CHECK (status IN ('pending', 'delivered', 'failed')),"       \
"  attempts     INTEGER NOT NULL DEFAULT 0,"                                 \
"  next_at_ms   INTEGER NOT NULL,"                                           \
"  last_status  INTEGER,"                                                    \
"  last_error   TEXT,"                                                       \
"  delivered_at INTEGER,"                                                    \
"  UNIQUE (event_seq, url)"                                                  \
") STRICT;"                                                                  \
"CREATE INDEX deliveries_due ON deliveries (status, next_at_ms);"        \
                                                                             \
TOLL_LEDGER_BALANCE_ALERTS_SQL                                               \
TOLL_LEDGER_CAP_ALERTS_SQL


#endif /* _TOLL_LEDGER_SCHEMA_H_INCLUDED_ */
