# Example variables for a bake; copy, edit, and pass with -var-file. Keep the three secrets out of
# this file: export PKR_VAR_db_password, PKR_VAR_django_secret_key, PKR_VAR_symmetric_secret_key.
vespene_source  = "https://github.com/example/vespene.git"
vespene_version = "c0fbb21"
pool            = "linux"

db_host = "vespene-db.internal.example.com"
db_name = "vespene"
db_user = "vespene"

build_root = "/srv/vespene/buildroot"
sudo_user  = "builder"

workers_per_instance = 1
max_builds           = 1
max_wait_minutes     = 5
when_workers_exit    = "none" # the drain agent (drain_agent = "auto") needs "none"

log_target                = "tcp://logs.internal.example.com:514"
buildroot_publish_command = "rsync -a {{ build.working_dir }} builds@archive.internal.example.com:/srv/builds/"

extra_packages = ["build-essential", "rsync", "openjdk-17-jdk-headless", "maven"]
build_tools    = ["make", "gcc", "rsync", "java", "mvn"]

aws_region     = "us-east-1"
gcp_project_id = "my-ci-project"
gcp_zone       = "us-central1-a"
