# Variables of the Vespene worker image (docs/images.md walks through them point by point).
# Secrets are `sensitive`: Packer prints <sensitive> wherever their values would appear. Pass
# them through the environment (PKR_VAR_db_password=...), not on the command line.

# --- point 1: the console's Vespene ------------------------------------------------------------
variable "vespene_source" {
  type        = string
  description = "Git URL of the Vespene tree the console runs (a fork, a mirror, or the original)."
}

variable "vespene_version" {
  type        = string
  description = "Git tag, branch or commit the console runs; the image is checked out at exactly this."
  validation {
    condition     = length(var.vespene_version) > 0
    error_message = "The vespene_version must be the console's git tag, branch or commit."
  }
}

# --- the pool ------------------------------------------------------------------------------------
variable "pool" {
  type        = string
  description = "Vespene worker pool (worker_pools.name) the workers serve."
  validation {
    condition     = length(var.pool) > 0 && length(regex_replace(var.pool, "[A-Za-z0-9._-]", "")) == 0
    error_message = "The pool may only contain letters, digits, '.', '_' and '-'."
  }
}

# --- points 2 and 6: settings.d ------------------------------------------------------------------
variable "db_host" {
  type        = string
  description = "Host of the Vespene PostgreSQL database, as reachable from the workers' network."
}

variable "db_port" {
  type    = number
  default = 5432
}

variable "db_name" {
  type    = string
  default = "vespene"
}

variable "db_user" {
  type    = string
  default = "vespene"
}

variable "db_sslmode" {
  type        = string
  default     = "prefer"
  description = "libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full)."
}

variable "db_password" {
  type        = string
  sensitive   = true
  description = "Password of db_user; written to /etc/vespene/settings.d/database.py (mode 0600) only."
  validation {
    condition     = replace(var.db_password, "{{", "") == var.db_password
    error_message = "The db_password must not contain '{{' (Packer's template engine would interpret it)."
  }
}

variable "django_secret_key" {
  type        = string
  sensitive   = true
  description = "SECRET_KEY of the console (its /etc/vespene/settings.d/secrets.py)."
  validation {
    condition     = replace(var.django_secret_key, "{{", "") == var.django_secret_key
    error_message = "The django_secret_key must not contain '{{' (Packer's template engine would interpret it)."
  }
}

variable "symmetric_secret_key" {
  type        = string
  sensitive   = true
  description = "SYMETRIC_SECRET_KEY of the console (Fernet key); without it workers cannot decrypt SSH keys and secrets."
  validation {
    condition     = replace(var.symmetric_secret_key, "{{", "") == var.symmetric_secret_key
    error_message = "The symmetric_secret_key must not contain '{{' (Packer's template engine would interpret it)."
  }
}

# --- points 3 and 4: build root and sudo user ------------------------------------------------------
variable "build_root" {
  type        = string
  default     = "/srv/vespene/buildroot"
  description = "BUILD_ROOT; must survive a reboot (not under /tmp)."
}

variable "sudo_user" {
  type        = string
  default     = "builder"
  description = "The pool's sudo_user (worker_pools.sudo_user): builds run as this user."
}

# --- point 5: the worker command line ----------------------------------------------------------------
variable "workers_per_instance" {
  type        = number
  default     = 1
  description = "Workers per instance; above 1 they run as parallel loops of the drain agent (under supervisor with drain_agent = off). Tell the autoscaler with workers_per_instance in its executor section, not with the pool's multiplier."
  validation {
    condition     = var.workers_per_instance >= 1
    error_message = "The workers_per_instance must be at least 1."
  }
}

variable "max_builds" {
  type        = number
  default     = 1
  description = "--max-builds of each worker (-1: no limit). Keep 1 with a non-declarative executor."
}

variable "max_wait_minutes" {
  type        = number
  default     = 5
  description = "--max-wait-minutes of each worker (-1: never exit when idle)."
}

variable "when_workers_exit" {
  type        = string
  default     = "none"
  description = "'poweroff' powers the instance off once its worker(s) have exited, so the group replaces or drops it; 'none' leaves it running."
}

# --- scale-in: the drain agent (docs/scale-in.md) ----------------------------------------------------
variable "drain_agent" {
  type        = string
  default     = "auto"
  description = "Runs the workers under vespene-drain-agent, which acknowledges the autoscaler's scale-in only once its workers have exited: 'auto' (aws for amazon-ebs, gce for googlecompute), 'aws', 'gce', 'none' (the agent's worker loop without a cloud signal) or 'off' (no agent: the worker, or supervisord for several, runs directly; scale-in is best-effort). With the agent, max_builds must be 1, max_wait_minutes not -1 and when_workers_exit 'none'."
  validation {
    condition     = length(regex_replace(var.drain_agent, "^(auto|aws|gce|none|off)$", "")) == 0 && length(var.drain_agent) > 0
    error_message = "The drain_agent must be auto, aws, gce, none or off."
  }
}

variable "drain_poll_seconds" {
  type        = number
  default     = 5
  description = "How often the drain agent reads the removal signal (GCE: the longest wait_for_change) and looks for exited workers."
  validation {
    condition     = var.drain_poll_seconds >= 1 && var.drain_poll_seconds <= 300
    error_message = "The drain_poll_seconds must be from 1 to 300."
  }
}

variable "drain_heartbeat_seconds" {
  type        = number
  default     = 600
  description = "AWS: how often the drain agent records a lifecycle-action heartbeat while a worker still runs; keep it well below the hook's heartbeat timeout."
  validation {
    condition     = var.drain_heartbeat_seconds >= 1 && var.drain_heartbeat_seconds <= 7200
    error_message = "The drain_heartbeat_seconds must be from 1 to 7200."
  }
}

variable "drain_hook_name" {
  type        = string
  default     = "vespene-drain"
  description = "AWS: the termination lifecycle hook the agent completes (lifecycle_hook_name of [executors.aws-asg])."
}

# --- point 6: database reachability ---------------------------------------------------------------
variable "db_check_at_bake" {
  type        = bool
  default     = false
  description = "Also connect to the database during the bake (only when the build network can reach it)."
}

variable "db_check_timeout_seconds" {
  type        = number
  default     = 300
  description = "How long the boot-time check waits for the database before failing."
}

variable "on_db_unreachable" {
  type        = string
  default     = "none"
  description = "'poweroff' powers the instance off when the database stays unreachable at boot; 'none' leaves it running without a worker."
}

# --- point 7: logs ------------------------------------------------------------------------------------
variable "log_target" {
  type        = string
  description = "Syslog receiver for /var/log/vespene/*.log: tcp://HOST:PORT or udp://HOST:PORT."
}

# --- point 8: build roots outlive the instance ---------------------------------------------------------
variable "buildroot_publish_command" {
  type        = string
  default     = ""
  description = "Vespene command trigger run after every build, e.g. 'rsync -a {{ build.working_dir }} archive:/builds/'. Set this or buildroot_mount_source."
}

variable "buildroot_mount_source" {
  type        = string
  default     = ""
  description = "Shared filesystem mounted at build_root (e.g. fs-0123.efs.us-east-1.amazonaws.com:/ or 10.0.0.5:/builds). Set this or buildroot_publish_command."
}

variable "buildroot_mount_fstype" {
  type    = string
  default = "nfs4"
}

variable "buildroot_mount_options" {
  type    = string
  default = "_netdev,nofail,noatime"
}

# --- point 10: build tools -------------------------------------------------------------------------
variable "extra_packages" {
  type        = list(string)
  default     = ["build-essential", "rsync"]
  description = "Debian packages the builds need, installed at bake time."
}

variable "build_tools" {
  type        = list(string)
  default     = ["make", "gcc", "rsync"]
  description = "Commands that must be on PATH in the image (checked by point 10)."
}

# --- AWS (amazon-ebs) ------------------------------------------------------------------------------
variable "aws_region" {
  type    = string
  default = "us-east-1"
}

variable "aws_instance_type" {
  type    = string
  default = "t3.small"
}

variable "aws_source_ami_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter of the base AMI."
}

variable "aws_source_ami_owner" {
  type        = string
  default     = "136693071363"
  description = "Owner of the base AMI (136693071363: Debian)."
}

variable "aws_subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance; empty: the default VPC."
}

variable "aws_ssh_username" {
  type    = string
  default = "admin"
}

# --- GCE (googlecompute) ---------------------------------------------------------------------------
variable "gcp_project_id" {
  type        = string
  default     = ""
  description = "Project that builds and owns the image; required for the googlecompute build."
}

variable "gcp_zone" {
  type    = string
  default = "us-central1-a"
}

variable "gcp_machine_type" {
  type    = string
  default = "e2-small"
}

variable "gcp_source_image_family" {
  type    = string
  default = "debian-12"
}

variable "gcp_source_image_project" {
  type    = string
  default = "debian-cloud"
}

variable "gcp_subnetwork" {
  type        = string
  default     = ""
  description = "Subnetwork of the build VM; empty: the default network."
}

variable "gcp_ssh_username" {
  type    = string
  default = "packer"
}

locals {
  timestamp = formatdate("YYYYMMDDhhmmss", timestamp())

  # AWS tags take any value.
  aws_tags = {
    vespene_worker  = "true"
    vespene_pool    = var.pool
    vespene_version = var.vespene_version
  }

  # GCE label values: lower-case letters, digits, '_' and '-', at most 63 characters; any other
  # character becomes '_', exactly as the gce-mig executor and the audit expect (autoscaler_gce_mig::label_value).
  gce_pool    = substr(regex_replace(lower(var.pool), "[^a-z0-9_-]", "_"), 0, 63)
  gce_version = substr(regex_replace(lower(var.vespene_version), "[^a-z0-9_-]", "-"), 0, 63)
  gce_labels = {
    vespene_worker  = "true"
    vespene_pool    = local.gce_pool
    vespene_version = local.gce_version
  }
  # GCE image names: [a-z]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
  gce_image_base = "vespene-worker-${substr(regex_replace(local.gce_pool, "_", "-"), 0, 32)}"

  # What every provisioning step and the checks receive (no secrets).
  env = [
    "VESPENE_IMAGE_SRC=/tmp/vespene-image",
    "VESPENE_POOL=${var.pool}",
    "VESPENE_VERSION=${var.vespene_version}",
    "VESPENE_SOURCE=${var.vespene_source}",
    "VESPENE_BUILD_ROOT=${var.build_root}",
    "VESPENE_SUDO_USER=${var.sudo_user}",
    "VESPENE_DB_HOST=${var.db_host}",
    "VESPENE_DB_PORT=${var.db_port}",
    "VESPENE_DB_NAME=${var.db_name}",
    "VESPENE_DB_USER=${var.db_user}",
    "VESPENE_DB_SSLMODE=${var.db_sslmode}",
    "VESPENE_WORKERS_PER_INSTANCE=${var.workers_per_instance}",
    "VESPENE_MAX_BUILDS=${var.max_builds}",
    "VESPENE_MAX_WAIT_MINUTES=${var.max_wait_minutes}",
    "VESPENE_WHEN_WORKERS_EXIT=${var.when_workers_exit}",
    "VESPENE_DB_CHECK_TIMEOUT=${var.db_check_timeout_seconds}",
    "VESPENE_ON_DB_UNREACHABLE=${var.on_db_unreachable}",
    "VESPENE_LOG_TARGET=${var.log_target}",
    # base64: Packer would otherwise read the Jinja {{ ... }} of the trigger as its own template.
    "VESPENE_PUBLISH_COMMAND_B64=${base64encode(var.buildroot_publish_command)}",
    "VESPENE_BUILDROOT_MOUNT_SOURCE=${var.buildroot_mount_source}",
    "VESPENE_BUILDROOT_MOUNT_FSTYPE=${var.buildroot_mount_fstype}",
    "VESPENE_BUILDROOT_MOUNT_OPTIONS=${var.buildroot_mount_options}",
    "VESPENE_BUILD_TOOLS=${join(" ", var.build_tools)}",
    "VESPENE_EXTRA_PACKAGES=${join(" ", var.extra_packages)}",
    # "auto" is resolved by the steps from VESPENE_BUILD_SOURCE (each provisioner passes source.type).
    "VESPENE_DRAIN_AGENT=${var.drain_agent}",
    "VESPENE_DRAIN_POLL_SECONDS=${var.drain_poll_seconds}",
    "VESPENE_DRAIN_HEARTBEAT_SECONDS=${var.drain_heartbeat_seconds}",
    "VESPENE_DRAIN_HOOK_NAME=${var.drain_hook_name}",
  ]

  # Only for the steps that write settings.d (and the one validating them).
  secret_env = [
    "VESPENE_DB_PASSWORD=${var.db_password}",
    "VESPENE_DJANGO_SECRET_KEY=${var.django_secret_key}",
    "VESPENE_SYMMETRIC_SECRET_KEY=${var.symmetric_secret_key}",
  ]

  # Variables go through a file sourced by the root shell, never onto a command line: sudo logs
  # command lines, and a baked log must not hold the database password.
  sudo_execute = "chmod +x {{ .Path }}; sudo sh -c '. {{ .EnvVarFile }} && {{ .Path }}'"
}
