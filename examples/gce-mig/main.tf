# A zonal managed instance group of Vespene workers built from the image of images/
# (googlecompute). The autoscaler owns target_size (Terraform ignores it after creation).
# Instances carry the labels vespene_worker=true, vespene_pool=<pool>, vespene_version=<version>
# (label values lower-cased; in the pool, any character other than a-z, 0-9, '_' and '-' becomes
# '_', which is the value the gce-mig executor and `autoscaler audit` look for; in the version it
# becomes '-'; as the image's labels).
# A worker's hostname is its instance name, which is how the gce-mig executor tells which
# instances run a build.
# The image's drain agent (images/, drain_agent = "auto") runs the workers: to scale in, the
# autoscaler sets the instance metadata key vespene-drain = requested; the agent starts no new
# worker, waits for the running ones to exit, and answers with the guest attribute
# vespene/drain = done; only then does the autoscaler delete the instance (docs/scale-in.md).
# The label vespene_drain_agent = v1 marks instances that run the agent; guest attributes must
# be enabled (enable-guest-attributes = TRUE) for the answer. The agent needs no service
# account: it only talks to the metadata server.

terraform {
  required_version = ">= 1.3"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

provider "google" {
  project = var.project
  zone    = var.zone
}

variable "project" {
  type = string
}

variable "zone" {
  type    = string
  default = "us-central1-a"
}

variable "pool" {
  type        = string
  description = "Vespene worker pool (worker_pools.name)."
}

variable "vespene_version" {
  type        = string
  description = "The console's Vespene version (label value of the image)."
}

variable "machine_type" {
  type    = string
  default = "e2-standard-4"
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the workers; it must reach the Vespene database (point 6)."
}

variable "service_account_email" {
  type        = string
  default     = null
  description = "Service account of the workers (none needed by Vespene itself)."
}

locals {
  label_pool    = substr(replace(lower(var.pool), "/[^a-z0-9_-]/", "_"), 0, 63)
  label_version = substr(replace(lower(var.vespene_version), "/[^a-z0-9_-]/", "-"), 0, 63)
  name          = "vespene-worker-${substr(replace(local.label_pool, "_", "-"), 0, 32)}"
}

# The newest image of the family images/ bakes for this pool.
data "google_compute_image" "worker" {
  family  = local.name
  project = var.project
}

resource "google_compute_instance_template" "worker" {
  name_prefix  = "${local.name}-"
  machine_type = var.machine_type

  labels = {
    vespene_worker  = "true"
    vespene_pool    = local.label_pool
    vespene_version = local.label_version
    # The instances run the drain agent; remove for images baked with drain_agent = "off".
    vespene_drain_agent = "v1"
  }

  # The drain agent acknowledges a scale-in with the guest attribute vespene/drain = done.
  metadata = {
    enable-guest-attributes = "TRUE"
  }

  disk {
    source_image = data.google_compute_image.worker.self_link
    boot         = true
    auto_delete  = true
  }

  network_interface {
    subnetwork = var.subnetwork
  }

  dynamic "service_account" {
    for_each = var.service_account_email == null ? [] : [var.service_account_email]
    content {
      email  = service_account.value
      scopes = ["logging-write", "monitoring-write"]
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_instance_group_manager" "workers" {
  name               = "vespene-${replace(local.label_pool, "_", "-")}"
  zone               = var.zone
  base_instance_name = local.name
  target_size        = 0

  version {
    instance_template = google_compute_instance_template.worker.id
  }

  lifecycle {
    # The autoscaler resizes the group; a later `terraform apply` must not reset it.
    ignore_changes = [target_size]
  }
}

output "instance_group_manager" {
  description = "Group to give the pool's gce-mig executor (zones/ZONE/instanceGroupManagers/NAME)."
  value       = "zones/${var.zone}/instanceGroupManagers/${google_compute_instance_group_manager.workers.name}"
}
