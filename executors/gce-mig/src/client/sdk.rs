//! [`super::ComputeApi`] on the official SDK: client construction and the calls. Credentials
//! are made in [`super::credentials`], SDK models converted in [`super::convert`].

use super::convert::{
    group_error, group_info, instance_info, managed_info, operation_info, zone_operation_info,
};
use super::credentials::build_credentials;
use super::*;
use crate::config::Resolved;
use crate::target::Location;
use crate::GceMigError;
use google_cloud_compute_v1::client::{
    InstanceGroupManagers, Instances, RegionInstanceGroupManagers, ZoneOperations,
};
use google_cloud_compute_v1::model;
use google_cloud_gax::retry_policy::NeverRetry;

/// [`ComputeApi`] on `google-cloud-compute-v1`.
pub struct SdkCompute {
    zonal: InstanceGroupManagers,
    regional: RegionInstanceGroupManagers,
    instances: Instances,
    zone_operations: ZoneOperations,
    page_size: u32,
}

impl SdkCompute {
    /// Builds the three SDK clients on one set of credentials, with the SDK's retries off (the
    /// executor's retry loop is the only one) and a per-attempt timeout.
    pub(crate) async fn new(resolved: &Resolved) -> Result<SdkCompute, GceMigError> {
        let credentials = build_credentials(resolved).await?;
        let attempt_timeout = Duration::from_secs(resolved.config.request_timeout_seconds);
        let endpoint_desc = resolved
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://compute.googleapis.com".into());
        let client_err = |e: google_cloud_gax::client_builder::Error| GceMigError::Client {
            endpoint: endpoint_desc.clone(),
            message: e.to_string(),
        };

        macro_rules! build {
            ($client:ty) => {{
                let mut b = <$client>::builder()
                    .with_credentials(credentials.clone())
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(attempt_timeout);
                if let Some(e) = &resolved.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build().await.map_err(client_err)?
            }};
        }
        Ok(SdkCompute {
            zonal: build!(InstanceGroupManagers),
            regional: build!(RegionInstanceGroupManagers),
            instances: build!(Instances),
            zone_operations: build!(ZoneOperations),
            page_size: resolved.config.page_size,
        })
    }
}

#[async_trait]
impl ComputeApi for SdkCompute {
    async fn get_group(&self, group: &GroupPath) -> Result<GroupInfo, ApiError> {
        let g = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .get()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .get()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(group_info(&g))
    }

    async fn resize(
        &self,
        group: &GroupPath,
        size: u32,
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let op = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .resize()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_size(size)
                    .set_request_id(request_id)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .resize()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_size(size)
                    .set_request_id(request_id)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn standby_instances(
        &self,
        group: &GroupPath,
        call: StandbyCall,
        instance_urls: &[String],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        // No force flag: the group's `standbyPolicy.initialDelaySec` is honoured, and the
        // operation is DONE once the actions are scheduled (the instances then go through
        // SUSPENDING / STOPPING / RESUMING / STARTING, seen in `listManagedInstances`).
        let urls = instance_urls.to_vec();
        // The same request on either client, each call with its own body type.
        macro_rules! send {
            ($client:ident, $method:ident, $set_location:ident, $location:expr, $body:ident) => {
                self.$client
                    .$method()
                    .set_project(&group.project)
                    .$set_location($location)
                    .set_instance_group_manager(&group.name)
                    .set_request_id(request_id)
                    .set_body(model::$body::new().set_instances(urls))
                    .send()
                    .await
            };
        }
        use StandbyCall::*;
        let op = match (call, &group.location) {
            (Suspend, Location::Zone(z)) => send!(
                zonal,
                suspend_instances,
                set_zone,
                z,
                InstanceGroupManagersSuspendInstancesRequest
            ),
            (Suspend, Location::Region(r)) => send!(
                regional,
                suspend_instances,
                set_region,
                r,
                RegionInstanceGroupManagersSuspendInstancesRequest
            ),
            (Resume, Location::Zone(z)) => send!(
                zonal,
                resume_instances,
                set_zone,
                z,
                InstanceGroupManagersResumeInstancesRequest
            ),
            (Resume, Location::Region(r)) => send!(
                regional,
                resume_instances,
                set_region,
                r,
                RegionInstanceGroupManagersResumeInstancesRequest
            ),
            (Stop, Location::Zone(z)) => send!(
                zonal,
                stop_instances,
                set_zone,
                z,
                InstanceGroupManagersStopInstancesRequest
            ),
            (Stop, Location::Region(r)) => send!(
                regional,
                stop_instances,
                set_region,
                r,
                RegionInstanceGroupManagersStopInstancesRequest
            ),
            (Start, Location::Zone(z)) => send!(
                zonal,
                start_instances,
                set_zone,
                z,
                InstanceGroupManagersStartInstancesRequest
            ),
            (Start, Location::Region(r)) => send!(
                regional,
                start_instances,
                set_region,
                r,
                RegionInstanceGroupManagersStartInstancesRequest
            ),
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn delete_instances(
        &self,
        group: &GroupPath,
        instance_urls: &[String],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        // skipInstancesOnValidationError: an instance that vanished meanwhile (its worker shut
        // it down) must not stop the others from going.
        let op = match &group.location {
            Location::Zone(z) => {
                let body = model::InstanceGroupManagersDeleteInstancesRequest::new()
                    .set_instances(instance_urls.to_vec())
                    .set_skip_instances_on_validation_error(true);
                self.zonal
                    .delete_instances()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_request_id(request_id)
                    .set_body(body)
                    .send()
                    .await
            }
            Location::Region(r) => {
                let body = model::RegionInstanceGroupManagersDeleteInstancesRequest::new()
                    .set_instances(instance_urls.to_vec())
                    .set_skip_instances_on_validation_error(true);
                self.regional
                    .delete_instances()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_request_id(request_id)
                    .set_body(body)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn get_operation(
        &self,
        group: &GroupPath,
        operation: &str,
    ) -> Result<OperationInfo, ApiError> {
        let op = match &group.location {
            Location::Zone(z) => {
                self.zonal
                    .get_operation()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_operation(operation)
                    .send()
                    .await
            }
            Location::Region(r) => {
                self.regional
                    .get_operation()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_operation(operation)
                    .send()
                    .await
            }
        }
        .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn list_managed_instances(
        &self,
        group: &GroupPath,
        page_token: Option<&str>,
    ) -> Result<Page<ManagedInstanceInfo>, ApiError> {
        let (items, next) = match &group.location {
            Location::Zone(z) => {
                let resp = self
                    .zonal
                    .list_managed_instances()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.managed_instances, resp.next_page_token)
            }
            Location::Region(r) => {
                let resp = self
                    .regional
                    .list_managed_instances()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.managed_instances, resp.next_page_token)
            }
        };
        Ok(Page {
            items: items
                .iter()
                .filter_map(|m| managed_info(group, m))
                .collect(),
            next_page_token: next.filter(|t| !t.is_empty()),
        })
    }

    async fn list_errors(
        &self,
        group: &GroupPath,
        page_token: Option<&str>,
    ) -> Result<Page<GroupError>, ApiError> {
        let (items, next) = match &group.location {
            Location::Zone(z) => {
                let resp = self
                    .zonal
                    .list_errors()
                    .set_project(&group.project)
                    .set_zone(z)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.items, resp.next_page_token)
            }
            Location::Region(r) => {
                let resp = self
                    .regional
                    .list_errors()
                    .set_project(&group.project)
                    .set_region(r)
                    .set_instance_group_manager(&group.name)
                    .set_max_results(self.page_size)
                    .set_or_clear_page_token(page_token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                (resp.items, resp.next_page_token)
            }
        };
        Ok(Page {
            items: items.iter().filter_map(group_error).collect(),
            next_page_token: next.filter(|t| !t.is_empty()),
        })
    }

    async fn list_instances(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<InstanceInfo>, ApiError> {
        let resp = self
            .instances
            .list()
            .set_project(project)
            .set_zone(zone)
            .set_filter(filter)
            .set_max_results(self.page_size)
            .set_or_clear_page_token(page_token)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(Page {
            items: resp.items.iter().filter_map(instance_info).collect(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<Page<ZoneOperationInfo>, ApiError> {
        let resp = self
            .zone_operations
            .list()
            .set_project(project)
            .set_zone(zone)
            .set_filter(filter)
            .set_max_results(self.page_size)
            .set_or_clear_page_token(page_token)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(Page {
            items: resp.items.iter().map(zone_operation_info).collect(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn get_instance(
        &self,
        project: &str,
        zone: &str,
        name: &str,
    ) -> Result<InstanceInfo, ApiError> {
        let i = self
            .instances
            .get()
            .set_project(project)
            .set_zone(zone)
            .set_instance(name)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        instance_info(&i).ok_or_else(|| ApiError {
            kind: ApiErrorKind::Rejected,
            http_status: None,
            reason: None,
            message: format!("instances.get of {name} returned an instance without a name"),
            retry_after: None,
        })
    }

    async fn set_metadata(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        fingerprint: Option<&[u8]>,
        items: &[(String, String)],
        request_id: &str,
    ) -> Result<OperationInfo, ApiError> {
        let mut body = model::Metadata::new().set_items(
            items
                .iter()
                .map(|(k, v)| model::metadata::Items::new().set_key(k).set_value(v))
                .collect::<Vec<_>>(),
        );
        if let Some(f) = fingerprint {
            body = body.set_fingerprint(f.to_vec());
        }
        let op = self
            .instances
            .set_metadata()
            .set_project(project)
            .set_zone(zone)
            .set_instance(name)
            .set_request_id(request_id)
            .set_body(body)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }

    async fn get_guest_attribute(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, ApiError> {
        let r = self
            .instances
            .get_guest_attributes()
            .set_project(project)
            .set_zone(zone)
            .set_instance(name)
            .set_variable_key(key)
            .send()
            .await;
        match r {
            Ok(g) => Ok(g.variable_value),
            Err(e) => {
                let e = classify(&e);
                if e.kind == ApiErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn get_zone_operation(
        &self,
        project: &str,
        zone: &str,
        operation: &str,
    ) -> Result<OperationInfo, ApiError> {
        let op = self
            .zone_operations
            .get()
            .set_project(project)
            .set_zone(zone)
            .set_operation(operation)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(operation_info(op))
    }
}
