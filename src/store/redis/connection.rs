//! `Conn`: one Redis connection handle over a single server (redis-rs
//! `ConnectionManager`) or a Redis Cluster (redis-rs `ClusterConnection`, which follows
//! MOVED/ASK, retries TRYAGAIN and refreshes the slot map after a failover).
//!
//! Both connect in the background: a replica starts (not ready) while Redis is down.

use std::{sync::Mutex, time::Duration};

use redis::{
    Cmd, FromRedisValue, RedisError, RedisResult, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr},
};

/// Where to connect: `--store redis` or `--store redis-cluster`.
#[derive(Debug, Clone)]
pub enum Target {
    /// One server.
    Single(Box<redis::Client>),
    /// The seed nodes of a cluster; the rest are discovered.
    Cluster(Vec<String>),
}

/// A connection handle; cheap to share (calls clone the underlying multiplexed handle).
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Box<ClusterConn>),
}

/// A cluster client and, once it has reached the cluster, its connection.
pub(super) struct ClusterConn {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
}

fn not_connected() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "not connected to the Redis cluster yet",
    ))
}

impl Conn {
    pub(super) fn new(target: Target, timeout: Duration) -> anyhow::Result<Self> {
        match target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    // Calls are bounded by our own timers, which know what a call carries.
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(200));
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    *client, config,
                )?))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    // Redirections and TRYAGAIN during a reshard are retried inside our
                    // own deadline; a failover shows as errors until the replica is
                    // promoted, which the caller answers with 503.
                    .retries(6)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()?;
                Ok(Self::Cluster(Box::new(ClusterConn {
                    client,
                    conn: Mutex::new(None),
                })))
            }
        }
    }

    /// Connects a cluster handle that has no connection yet (a no-op otherwise).
    pub(super) async fn ensure_connected(&self) -> RedisResult<()> {
        let Self::Cluster(cluster) = self else {
            return Ok(());
        };
        let ClusterConn { client, conn } = &**cluster;
        if conn.lock().expect("not poisoned").is_some() {
            return Ok(());
        }
        let fresh = client.get_async_connection().await?;
        *conn.lock().expect("not poisoned") = Some(fresh);
        Ok(())
    }

    fn cluster(conn: &Mutex<Option<ClusterConnection>>) -> RedisResult<ClusterConnection> {
        conn.lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(not_connected)
    }

    /// Sends `cmd`, routed by its first key in a cluster.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(m) => cmd.query_async(&mut m.clone()).await,
            Self::Cluster(c) => cmd.query_async(&mut Self::cluster(&c.conn)?).await,
        }
    }

    /// Loads `script` (on every master of a cluster).
    pub(super) async fn load(&self, script: &Script) -> RedisResult<()> {
        match self {
            Self::Single(m) => script.load_async(&mut m.clone()).await.map(drop),
            Self::Cluster(c) => script.load_async(&mut Self::cluster(&c.conn)?).await.map(drop),
        }
    }

    /// `WAIT replicas timeout` on the connection that wrote `slot` (the master of that
    /// slot in a cluster): how many replicas acknowledged the writes so far.
    pub(super) async fn wait_replicas(
        &self,
        slot_key: &str,
        replicas: u16,
        timeout: Duration,
    ) -> RedisResult<i64> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1));
        match self {
            Self::Single(m) => cmd.query_async(&mut m.clone()).await,
            Self::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(slot_key), SlotAddr::Master);
                let value = Self::cluster(&c.conn)?
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                i64::from_redis_value(value).map_err(RedisError::from)
            }
        }
    }

    /// `PING`: the server, or any one master of a cluster. A cluster with one master down
    /// still serves the other masters' slots, so that is not a reason to be unready.
    pub(super) async fn ping(&self) -> RedisResult<()> {
        match self {
            Self::Single(m) => redis::cmd("PING").query_async::<()>(&mut m.clone()).await,
            Self::Cluster(c) => Self::cluster(&c.conn)?
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
                .map(drop),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}
