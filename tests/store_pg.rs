#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The PostgreSQL store (`store.postgres`, src/store/postgres.rs) against a real throwaway cluster.

#[allow(unreachable_pub)]
mod common;

use common::pg::PgServer;

#[test]
fn harness_cluster_answers_and_restarts() {
    let mut pg = PgServer::start();
    assert_eq!(pg.sql("SELECT 1"), "1");
    pg.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (7);");
    pg.stop();
    pg.start_again();
    assert_eq!(pg.sql("SELECT x FROM t"), "7");
}
