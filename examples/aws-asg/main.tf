# An Auto Scaling group of Vespene workers built from the image of images/ (amazon-ebs).
#
# The autoscaler owns desired_capacity (Terraform ignores it after creation) and picks which
# instances leave (TerminateInstanceInAutoScalingGroup, never a busy one). A terminating
# instance waits in Terminating:Wait. The image's drain agent (images/, drain_agent = "auto")
# sees target-lifecycle-state = Terminated in the instance metadata, starts no new worker,
# sends heartbeats while its worker still runs a build, and completes the hook (CONTINUE) once
# the worker has exited: the instance role below allows exactly that, on this group only. The
# tag vespene_drain_agent = v1 tells the autoscaler that the instance runs the agent, so it
# leaves the completion to it (docs/scale-in.md). The hook's timeout only matters while
# neither the agent nor the autoscaler sends heartbeats.
# OldestInstance keeps the newest workers. Tags propagate to every instance:
# vespene_worker=true, vespene_pool=<pool>, vespene_version=<version>, vespene_drain_agent=v1.

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

  # IMDSv2 only; the instance's tags in the metadata: the drain agent reads its group's name
  # from tags/instance/aws:autoscaling:groupName.
  metadata_options {
    http_endpoint          = "enabled"
    http_tokens            = "required"
    instance_metadata_tags = "enabled"
  }

  iam_instance_profile {
    name = aws_iam_instance_profile.worker.name
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

  # The instances run the drain agent (images/, drain_agent = "auto"): the autoscaler leaves
  # CompleteLifecycleAction to them. Remove this tag for images baked with drain_agent = "off".
  tag {
    key                 = "vespene_drain_agent"
    value               = "v1"
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

# --- the workers' instance role: what the drain agent may do ----------------------------------------
data "aws_iam_policy_document" "worker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Only the two lifecycle calls of the drain agent, only on this group.
data "aws_iam_policy_document" "worker_drain" {
  statement {
    sid = "VespeneDrainAgent"
    actions = [
      "autoscaling:CompleteLifecycleAction",
      "autoscaling:RecordLifecycleActionHeartbeat",
    ]
    resources = [aws_autoscaling_group.workers.arn]
  }
}

resource "aws_iam_role" "worker" {
  name_prefix        = "vespene-worker-${var.pool}-"
  assume_role_policy = data.aws_iam_policy_document.worker_assume.json
}

resource "aws_iam_role_policy" "worker_drain" {
  name   = "vespene-drain-agent"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker_drain.json
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "vespene-worker-${var.pool}-"
  role        = aws_iam_role.worker.name
}

output "autoscaling_group_name" {
  description = "Name to give the pool's aws-asg executor."
  value       = aws_autoscaling_group.workers.name
}

output "lifecycle_hook_name" {
  value = "vespene-drain"
}
