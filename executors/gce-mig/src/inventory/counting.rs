//! A [`ComputeApi`] that counts every request (retries included), so the audit can report
//! what it cost.

use crate::client::{
    ApiError, ComputeApi, GroupError, GroupInfo, InstanceInfo, ManagedInstanceInfo, OperationInfo,
    Page, ZoneOperationInfo,
};
use crate::target::GroupPath;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Counts every request (retries included) so the audit can report what it cost.
pub(super) struct Counting {
    pub(super) inner: Arc<dyn ComputeApi>,
    pub(super) calls: AtomicU32,
}

impl Counting {
    /// One request more.
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ComputeApi for Counting {
    async fn get_group(&self, group: &GroupPath) -> Result<GroupInfo, ApiError> {
        self.tick();
        self.inner.get_group(group).await
    }
    async fn resize(&self, g: &GroupPath, size: u32, id: &str) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.resize(g, size, id).await
    }
    async fn delete_instances(
        &self,
        g: &GroupPath,
        urls: &[String],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.delete_instances(g, urls, id).await
    }
    async fn standby_instances(
        &self,
        g: &GroupPath,
        call: crate::client::StandbyCall,
        urls: &[String],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.standby_instances(g, call, urls, id).await
    }
    async fn get_operation(&self, g: &GroupPath, op: &str) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.get_operation(g, op).await
    }
    async fn list_managed_instances(
        &self,
        g: &GroupPath,
        token: Option<&str>,
    ) -> Result<Page<ManagedInstanceInfo>, ApiError> {
        self.tick();
        self.inner.list_managed_instances(g, token).await
    }
    async fn list_errors(
        &self,
        g: &GroupPath,
        token: Option<&str>,
    ) -> Result<Page<GroupError>, ApiError> {
        self.tick();
        self.inner.list_errors(g, token).await
    }
    async fn list_instances(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<Page<InstanceInfo>, ApiError> {
        self.tick();
        self.inner
            .list_instances(project, zone, filter, token)
            .await
    }
    async fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<Page<ZoneOperationInfo>, ApiError> {
        self.tick();
        self.inner
            .list_zone_operations(project, zone, filter, token)
            .await
    }
    async fn get_instance(&self, p: &str, z: &str, n: &str) -> Result<InstanceInfo, ApiError> {
        self.tick();
        self.inner.get_instance(p, z, n).await
    }
    async fn set_metadata(
        &self,
        p: &str,
        z: &str,
        n: &str,
        fingerprint: Option<&[u8]>,
        items: &[(String, String)],
        id: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner
            .set_metadata(p, z, n, fingerprint, items, id)
            .await
    }
    async fn get_guest_attribute(
        &self,
        p: &str,
        z: &str,
        n: &str,
        key: &str,
    ) -> Result<Option<String>, ApiError> {
        self.tick();
        self.inner.get_guest_attribute(p, z, n, key).await
    }
    async fn get_zone_operation(
        &self,
        p: &str,
        z: &str,
        op: &str,
    ) -> Result<OperationInfo, ApiError> {
        self.tick();
        self.inner.get_zone_operation(p, z, op).await
    }
}
