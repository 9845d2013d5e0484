# Vespene worker image for AWS (amazon-ebs) and GCE (googlecompute). Both builds run the same
# provisioning steps (scripts/), each mapped to points of Vespene's "Image Preparation" checklist,
# and end with scripts/check-image.sh, which fails the bake if any of the ten points is missed.
#
#   packer build -only=amazon-ebs.worker    -var-file=my.pkrvars.hcl images/
#   packer build -only=googlecompute.worker -var-file=my.pkrvars.hcl images/

source "amazon-ebs" "worker" {
  region          = var.aws_region
  instance_type   = var.aws_instance_type
  subnet_id       = var.aws_subnet_id
  ssh_username    = var.aws_ssh_username
  ami_name        = "vespene-worker-${var.pool}-${local.timestamp}"
  ami_description = "Vespene ${var.vespene_version} worker for pool ${var.pool}"

  source_ami_filter {
    filters = {
      name                = var.aws_source_ami_name
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = [var.aws_source_ami_owner]
    most_recent = true
  }

  # The image and its snapshot carry the tags; instances get them from the Auto Scaling group
  # (propagate_at_launch, see examples/aws-asg). The build instance is not a worker.
  tags          = local.aws_tags
  snapshot_tags = local.aws_tags
  run_tags = {
    Name            = "packer: vespene-worker ${var.pool}"
    vespene_worker  = "false"
    vespene_pool    = var.pool
    vespene_version = var.vespene_version
  }
}

source "googlecompute" "worker" {
  project_id              = var.gcp_project_id
  zone                    = var.gcp_zone
  machine_type            = var.gcp_machine_type
  source_image_family     = var.gcp_source_image_family
  source_image_project_id = [var.gcp_source_image_project]
  subnetwork              = var.gcp_subnetwork
  ssh_username            = var.gcp_ssh_username
  image_name              = "${local.gce_image_base}-${local.timestamp}"
  image_family            = local.gce_image_base
  image_description       = "Vespene ${var.vespene_version} worker for pool ${var.pool}"

  # The image carries the labels; instances get them from the instance template
  # (see examples/gce-mig). The build VM is not a worker.
  image_labels = local.gce_labels
  labels = {
    vespene_worker  = "false"
    vespene_pool    = local.gce_pool
    vespene_version = local.gce_version
  }
}

build {
  sources = ["source.amazon-ebs.worker", "source.googlecompute.worker"]

  provisioner "shell" {
    inline = ["rm -rf /tmp/vespene-image", "mkdir -p /tmp/vespene-image"]
  }

  # The steps source scripts/lib.sh and install check-image.sh, the drain agent and the
  # supervisor listener.
  provisioner "file" {
    source      = "${path.root}/scripts/"
    destination = "/tmp/vespene-image"
  }

  # Refuse inconsistent variables before spending minutes on apt and pip.
  provisioner "shell" {
    environment_vars = concat(local.env, local.secret_env, ["VESPENE_BUILD_SOURCE=${source.type}"])
    use_env_var_file = true
    execute_command  = local.sudo_execute
    scripts          = ["${path.root}/scripts/00-validate.sh"]
  }

  # Point 10 (packages, build tools) and point 1 (Vespene at the console's version).
  provisioner "shell" {
    environment_vars = concat(local.env, ["VESPENE_BUILD_SOURCE=${source.type}"])
    use_env_var_file = true
    execute_command  = local.sudo_execute
    scripts = [
      "${path.root}/scripts/10-packages.sh",
      "${path.root}/scripts/20-vespene.sh",
    ]
  }

  # Points 2, 3, 4, 8 (and the file server of 9): settings.d, build root, sudo rule, publishing.
  provisioner "shell" {
    environment_vars = concat(local.env, local.secret_env, ["VESPENE_BUILD_SOURCE=${source.type}"])
    use_env_var_file = true
    execute_command  = local.sudo_execute
    scripts          = ["${path.root}/scripts/30-settings.sh"]
  }

  # Points 5, 6, 7, 9: worker service, boot-time database check, log shipping, no web interface;
  # then remove what no two instances may share.
  provisioner "shell" {
    environment_vars = concat(local.env, ["VESPENE_BUILD_SOURCE=${source.type}"])
    use_env_var_file = true
    execute_command  = local.sudo_execute
    scripts = [
      "${path.root}/scripts/40-services.sh",
      "${path.root}/scripts/90-cleanup.sh",
    ]
  }

  # Last: the ten checks against the requested values. Any FAIL line fails the bake.
  provisioner "shell" {
    environment_vars = concat(local.env, ["VESPENE_BUILD_SOURCE=${source.type}", "VESPENE_CHECK_LIVE_DB=${var.db_check_at_bake}"])
    use_env_var_file = true
    execute_command  = local.sudo_execute
    script           = "${path.root}/scripts/check-image.sh"
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      vespene_pool    = var.pool
      vespene_version = var.vespene_version
    }
  }
}
