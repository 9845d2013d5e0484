# A Vespene worker pool as a GCE managed instance group, sized by the autoscaler's gce-mig executor.
#
# The instance template carries the labels the executor checks (vespene_worker, vespene_pool), the
# group starts empty and Terraform ignores its size afterwards (the autoscaler owns it), and the
# autoscaler's service account gets exactly the permissions the executor uses.
#
#   terraform apply -var project=my-project -var pool=linux
#   pool row: executor = 'gce-mig', executor_command = 'zones/us-central1-a/instanceGroupManagers/vespene-linux'

terraform {
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

variable "project" {
  type        = string
  description = "GCE project id"
}

variable "zone" {
  type    = string
  default = "us-central1-a"
}

variable "pool" {
  type        = string
  description = "Vespene worker pool name, as a GCE label value (lowercase letters, digits, _ and -)"
  validation {
    condition     = can(regex("^[a-z0-9_-]{1,63}$", var.pool))
    error_message = "GCE label values allow only lowercase letters, digits, _ and -, at most 63 characters."
  }
}

variable "image" {
  type        = string
  description = "Worker image built from images/ (Packer), baked with when_workers_exit=none"
  default     = "family/vespene-worker"
}

variable "machine_type" {
  type    = string
  default = "e2-standard-4"
}

provider "google" {
  project = var.project
}

# The identity the autoscaler runs as (attach it to the VM running the autoscaler, or use a key).
resource "google_service_account" "autoscaler" {
  account_id   = "vespene-autoscaler"
  display_name = "Vespene autoscaler"
}

resource "google_project_iam_custom_role" "gce_mig_executor" {
  role_id = "vespeneGceMigExecutor"
  title   = "Vespene autoscaler gce-mig executor"
  permissions = [
    "compute.instanceGroupManagers.get",
    "compute.instanceGroupManagers.update",
    "compute.instances.list",
    "compute.zoneOperations.get",
    "compute.regionOperations.get",
  ]
}

resource "google_project_iam_member" "autoscaler" {
  project = var.project
  role    = google_project_iam_custom_role.gce_mig_executor.id
  member  = "serviceAccount:${google_service_account.autoscaler.email}"
}

# The identity the workers run as: no roles by default, grant what your builds need.
resource "google_service_account" "worker" {
  account_id   = substr("vespene-w-${replace(var.pool, "_", "-")}", 0, 30)
  display_name = "Vespene worker (${var.pool})"
}

resource "google_compute_instance_template" "worker" {
  name_prefix  = "vespene-${replace(var.pool, "_", "-")}-"
  machine_type = var.machine_type

  labels = {
    vespene_worker = "true"
    vespene_pool   = var.pool
  }

  disk {
    source_image = var.image
    auto_delete  = true
    boot         = true
    disk_size_gb = 50
  }

  network_interface {
    network = "default"
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_instance_group_manager" "pool" {
  name               = "vespene-${replace(var.pool, "_", "-")}"
  zone               = var.zone
  base_instance_name = "vespene-${replace(var.pool, "_", "-")}"
  target_size        = 0

  version {
    instance_template = google_compute_instance_template.worker.id
  }

  # Replace instances only when they are recreated anyway, never under a running build.
  update_policy {
    type                  = "OPPORTUNISTIC"
    minimal_action        = "REPLACE"
    max_surge_fixed       = 1
    max_unavailable_fixed = 0
  }

  lifecycle {
    ignore_changes = [target_size] # the autoscaler owns the size
  }
}

output "executor_command" {
  description = "Put this in the pool's executor_command (executor = gce-mig)"
  value       = "projects/${var.project}/zones/${var.zone}/instanceGroupManagers/${google_compute_instance_group_manager.pool.name}"
}
