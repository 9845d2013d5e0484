-- The part of Vespene's schema the autoscaler reads and writes, in SQLite's types (Vespene
-- itself runs on PostgreSQL; this is the embedded default for demos and tests).
-- `autoscaler db init` creates it in an EMPTY database.
CREATE TABLE worker_pools (
    id integer PRIMARY KEY AUTOINCREMENT,
    name varchar(512) NOT NULL UNIQUE,
    variables text,
    isolation_method varchar(50) NOT NULL,
    sudo_user varchar(100),
    permissions_hex varchar(5) NOT NULL,
    sleep_seconds integer NOT NULL,
    auto_abort_minutes integer NOT NULL,
    build_latest boolean NOT NULL,
    build_object_shelf_life integer NOT NULL,
    build_root_shelf_life integer NOT NULL,
    created_by_id integer,
    autoscaling_enabled boolean NOT NULL,
    autoscaling_status integer,
    excess integer NOT NULL,
    executor varchar(512),
    executor_command varchar(1024) NOT NULL,
    last_autoscaled datetime,
    maximum integer NOT NULL,
    minimum integer NOT NULL,
    multiplier real NOT NULL,
    planner varchar(512),
    queued_weight real NOT NULL,
    reevaluate_minutes integer NOT NULL,
    running_weight real NOT NULL
);
CREATE INDEX worker_pool_name_idx ON worker_pools (name);

CREATE TABLE workers (
    id integer PRIMARY KEY AUTOINCREMENT,
    worker_uid varchar(512) NOT NULL UNIQUE,
    hostname varchar(1024),
    port integer NOT NULL,
    build_root varchar(1024),
    first_checkin datetime,
    last_checkin datetime,
    fileserving_enabled boolean NOT NULL
);

CREATE TABLE builds (
    id integer PRIMARY KEY AUTOINCREMENT,
    is_internal boolean NOT NULL,
    revision varchar(20),
    revision_username varchar(512),
    queued_time datetime,
    start_time datetime,
    end_time datetime,
    return_code integer,
    status varchar(20) NOT NULL,
    output text,
    messages text,
    working_dir varchar(1024) NOT NULL,
    variables text NOT NULL,
    launch_answers text,
    output_variables text NOT NULL,
    script text,
    pipeline_origin_build_id integer,
    pipeline_parent_build_id integer,
    created_by_id integer,
    organization_id integer,
    pipeline_id integer,
    project_id integer,
    worker_id integer REFERENCES workers (id),
    worker_pool_id integer NOT NULL REFERENCES worker_pools (id)
);
CREATE INDEX builds_project_id_6734e488 ON builds (project_id);
CREATE INDEX builds_worker_id_22fdec99 ON builds (worker_id);
CREATE INDEX builds_worker_pool_id_6afeea57 ON builds (worker_pool_id);
