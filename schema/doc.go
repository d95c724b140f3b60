// Package schema owns stepflow's PostgreSQL tables: the SQL migrations that create them,
// embedded in the binary, and Migrate, which applies the missing ones idempotently under
// an advisory lock so that any number of processes may call it at start-up.
//
// The table names are configurable ([Tables]) because the defaults are shared with the
// Flowcraft "RabbitMQ & PostgreSQL" adapter: a database that adapter created is upgraded
// in place, keeping its rows and its ability to keep writing them. Names are checked by
// [Tables.Validate] and only ever reach SQL quoted ([Tables.Quoted]).
//
// Migrations are files migrations/NNN_name.sql, applied in name order, written as
// text/template over the quoted names. Each one is applied once per table set and
// recorded in the table stepflow_schema_migrations, keyed by the set's Statuses name, so
// several table sets (tests use their own) can live in one database. A migration, once
// released, is never edited: a change is a new file.
//
// This package imports pgx and the standard library only; it must not import the other
// stepflow packages (they build their SQL from [QuotedTables]).
package schema
