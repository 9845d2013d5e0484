# An Auto Scaling group of Vespene workers built from the image of images/ (amazon-ebs).
#
# The autoscaler owns desired_capacity (Terraform ignores it after creation). A terminating
# instance waits in Terminating:Wait: the autoscaler completes the hook at once when its worker
# is idle, and sends heartbeats while it runs a build (up to max_drain_seconds of
# [executors.aws-asg]). The hook's timeout only matters while the autoscaler is down.
# OldestInstance keeps the newest workers. Tags propagate to every
# instance: vespene_worker=true, vespene_pool=<pool>, vespene_version=<version>.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "pool" {
  type        = string
  description = "Vespene worker pool (worker_pools.name); also selects the image by its vespene_pool tag."
}

variable "vespene_version" {
  type        = string
  description = "The console's Vespene version; selects the image by its vespene_version tag."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets of the workers; they must reach the Vespene database (point 6)."
}

variable "security_group_ids" {
  type    = list(string)
  default = []
}

variable "instance_type" {
  type    = string
  default = "t3.large"
}

variable "max_size" {
  type        = number
  default     = 10
  description = "Instances, not workers: the pool's maximum divided by workers_per_instance."
}

variable "drain_timeout_seconds" {
  type        = number
  default     = 3600
  description = "Lifecycle hook heartbeat timeout: the fallback when the autoscaler is down (its max_drain_seconds bounds a drain). Keep it equal to heartbeat_timeout_seconds in [executors.aws-asg]."
}

data "aws_ami" "worker" {
  most_recent = true
  owners      = ["self"]

  filter {
    name   = "tag:vespene_worker"
    values = ["true"]
  }
  filter {
    name   = "tag:vespene_pool"
    values = [var.pool]
  }
  filter {
    name   = "tag:vespene_version"
    values = [var.vespene_version]
  }
}

resource "aws_launch_template" "worker" {
  name_prefix            = "vespene-worker-${var.pool}-"
  image_id               = data.aws_ami.worker.id
  instance_type          = var.instance_type
  vpc_security_group_ids = var.security_group_ids

  metadata_options {
    http_tokens = "required"
  }

  tag_specifications {
    resource_type = "volume"
    tags = {
      vespene_worker  = "true"
      vespene_pool    = var.pool
      vespene_version = var.vespene_version
    }
  }
}

resource "aws_autoscaling_group" "workers" {
  name                 = "vespene-${var.pool}"
  min_size             = 0
  max_size             = var.max_size
  desired_capacity     = 0
  vpc_zone_identifier  = var.subnet_ids
  termination_policies = ["OldestInstance"]
  health_check_type    = "EC2"

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
  }

  # Scale-in waits here until the instance's build is done (the lifecycle action is completed)
  # or the heartbeat runs out; CONTINUE then lets the termination proceed.
  initial_lifecycle_hook {
    name                 = "vespene-drain"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.drain_timeout_seconds
    default_result       = "CONTINUE"
  }

  tag {
    key                 = "vespene_worker"
    value               = "true"
    propagate_at_launch = true
  }

  tag {
    key                 = "vespene_pool"
    value               = var.pool
    propagate_at_launch = true
  }

  tag {
    key                 = "vespene_version"
    value               = var.vespene_version
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "vespene-worker-${var.pool}"
    propagate_at_launch = true
  }

  lifecycle {
    # The autoscaler sets the desired capacity; a later `terraform apply` must not reset it.
    ignore_changes = [desired_capacity]
  }
}

output "autoscaling_group_name" {
  description = "Name to give the pool's aws-asg executor."
  value       = aws_autoscaling_group.workers.name
}

output "lifecycle_hook_name" {
  value = "vespene-drain"
}
