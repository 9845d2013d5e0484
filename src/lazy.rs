//! Cloud backends built on first use. A machine with no GCE credentials must still scale its
//! shell and AWS pools: the backend is built when a pool first needs it, a failure is recorded
//! on exactly those pools (credentials: status 4), and the next cycle tries again.

use async_trait::async_trait;
use autoscaler_executor::inventory::no_inventory;
use autoscaler_executor::{
    ErrorKind, Executor, ExecutorError, Inventory, InventorySnapshot, Outcome, Plan, ScaleRequest,
    TargetStatus, WorkerPool,
};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Builds the real backend; on failure, its kind and message (no pool: the caller adds it).
pub type Init = Box<
    dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Executor>, (ErrorKind, String)>> + Send + Sync,
>;
/// The backend's I/O-free per-pool check, usable before it is built.
pub type Check = Box<dyn Fn(&WorkerPool, Plan) -> Result<(), ExecutorError> + Send + Sync>;

/// A backend built on first use; see the module docs.
pub struct LazyExecutor {
    name: &'static str,
    declarative: bool,
    check: Check,
    init: Init,
    cell: OnceCell<Arc<dyn Executor>>,
}

impl LazyExecutor {
    /// `name` and `declarative` must match what the backend will say.
    pub fn new(name: &'static str, declarative: bool, check: Check, init: Init) -> Self {
        LazyExecutor {
            name,
            declarative,
            check,
            init,
            cell: OnceCell::new(),
        }
    }

    /// A declarative cloud backend from its config section: `check` validates a pool from the
    /// config alone (no I/O), `build` makes the backend, `kind` classifies a build failure.
    pub fn cloud<C, X, E, Fut>(
        name: &'static str,
        cfg: C,
        check: fn(&C, &WorkerPool, Plan) -> Result<(), ExecutorError>,
        build: fn(C) -> Fut,
        kind: fn(&E) -> ErrorKind,
    ) -> Self
    where
        C: Clone + Send + Sync + 'static,
        X: Executor + 'static,
        E: std::fmt::Display + 'static,
        Fut: std::future::Future<Output = Result<X, E>> + Send + 'static,
    {
        let check_cfg = cfg.clone();
        LazyExecutor::new(
            name,
            true,
            Box::new(move |pool, plan| check(&check_cfg, pool, plan)),
            Box::new(move || {
                let fut = build(cfg.clone());
                Box::pin(async move {
                    fut.await
                        .map(|e| Arc::new(e) as Arc<dyn Executor>)
                        .map_err(|e| (kind(&e), e.to_string()))
                })
            }),
        )
    }

    async fn get(&self, pool: &str) -> Result<&Arc<dyn Executor>, ExecutorError> {
        self.cell
            .get_or_try_init(|| (self.init)())
            .await
            .map_err(|(kind, message)| ExecutorError::new(pool, kind, message))
    }
}

#[async_trait]
impl Executor for LazyExecutor {
    fn name(&self) -> &'static str {
        self.name
    }

    fn declarative(&self) -> bool {
        self.declarative
    }

    fn validate(&self, pool: &WorkerPool, plan: Plan) -> Result<(), ExecutorError> {
        (self.check)(pool, plan)
    }

    async fn prepare(&self, pools: &[&WorkerPool], dry_run: bool) -> Result<(), ExecutorError> {
        let Some(first) = pools.first() else {
            return Ok(());
        };
        self.get(&first.name).await?.prepare(pools, dry_run).await
    }

    async fn scale(&self, request: ScaleRequest<'_>) -> Result<Outcome, ExecutorError> {
        self.get(&request.pool.name).await?.scale(request).await
    }

    async fn status(&self, pool: &WorkerPool) -> Result<Option<TargetStatus>, ExecutorError> {
        self.get(&pool.name).await?.status(pool).await
    }

    /// Always offered: whether the backend has an inventory is known only once it is built,
    /// which [`Inventory::inventory`] below does (and reports, like a scale would, if it fails).
    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }
}

#[async_trait]
impl Inventory for LazyExecutor {
    async fn inventory(&self, pools: &[&WorkerPool]) -> Result<InventorySnapshot, ExecutorError> {
        let Some(first) = pools.first() else {
            return Ok(InventorySnapshot::default());
        };
        let backend = self.get(&first.name).await?;
        match backend.inventory() {
            Some(inventory) => inventory.inventory(pools).await,
            None => Err(no_inventory(&first.name, self.name)),
        }
    }
}
