# Dummy values for `packer validate` in CI (images/ci-check.sh). Nothing here is a real secret,
# and nothing is ever built from this file.
vespene_source            = "https://git.example.invalid/vespene.git"
vespene_version           = "v0.0.0-ci"
pool                      = "ci-pool"
db_host                   = "db.example.invalid"
db_password               = "ci-dummy-db-password"
django_secret_key         = "ci-dummy-django-secret-key"
symmetric_secret_key      = "Y2ktZHVtbXktZmVybmV0LWtleS0zMi1ieXRlcy0hISE="
log_target                = "tcp://logs.example.invalid:514"
buildroot_publish_command = "rsync -a {{ build.working_dir }} archive.example.invalid:/builds/"
gcp_project_id            = "ci-dummy-project"
