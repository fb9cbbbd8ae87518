#!/usr/bin/env bash
# Local stack for notes_pipeline: PostgreSQL (CRM source, identity data, Dagster storage,
# FerretDB backend), a moto S3 server, MongoDB (FerretDB 1.x, a local mongod, or an external
# server given by NOTES_PIPELINE_MONGO_URI) and the identity-service stand-in
# (devtools/identity_service.py: the production HTTP contract over the `identity` database).
#
#   scripts/stack.sh up       start what is not running, (re)provision, write .stack/env
#   scripts/stack.sh down     stop only the processes `up` started (PID files in .stack/pids)
#   scripts/stack.sh status   print each service up/down (exit 1 if any is down)
#   scripts/stack.sh destroy  down, then delete all stack state (data, secrets, env)
#   scripts/stack.sh stop|start|restart SERVICE   one service (postgres, identity, s3, mongo)
#                             that `up` started; `start` keeps .stack/env as it is
#   scripts/stack.sh pause|resume SERVICE         SIGSTOP/SIGCONT one single-process service
#                             (identity, s3, mongo): it keeps its port and state but answers
#                             nothing until resumed (fault injection, RELIABILITY.md)
#
# moto keeps its buckets in memory: `stop s3` (or `restart s3`) loses every object, and
# `start s3` recreates only the two empty stack buckets. To take S3 away without losing its
# content, `pause s3` / `resume s3`.
#
# Everything listens on 127.0.0.1 only. State lives in ${NOTES_PIPELINE_STACK_DIR:-.stack}.
# NOTES_PIPELINE_STACK_PORT_OFFSET (default 0) shifts every port, so a second, independent
# stack can run next to the first one (the stack tests use that). The ports sit below Linux's
# ephemeral range (32768-60999), where an outgoing connection could briefly hold one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${NOTES_PIPELINE_STACK_DIR:-$ROOT/.stack}"
case "$STACK_DIR" in /*) ;; *) STACK_DIR="$PWD/$STACK_DIR" ;; esac
OFFSET="${NOTES_PIPELINE_STACK_PORT_OFFSET:-0}"

HOST=127.0.0.1
PG_PORT=$((15432 + OFFSET))
S3_PORT=$((15500 + OFFSET))
MONGO_PORT=$((15017 + OFFSET))
IDENTITY_PORT=$((15580 + OFFSET))
PID_DIR="$STACK_DIR/pids"
LOG_DIR="$STACK_DIR/logs"
ENV_FILE="$STACK_DIR/env"
SECRETS_FILE="$STACK_DIR/secrets"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STACK_MONGO_URI="mongodb://$HOST:$MONGO_PORT/"
IDENTITY_URL="http://$HOST:$IDENTITY_PORT"
# Default FerretDB backend: see docs/MONGODB.md (benchmarks/ferretdb_backends.py) for why.
DEFAULT_FERRETDB_BACKEND=postgresql

log() { echo "stack: $*" >&2; }
die() { echo "stack: ERROR: $*" >&2; exit 1; }

PG_BIN=""
IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1
if ((IS_ROOT)); then PG_OS_USER=postgres; else PG_OS_USER="$(id -un)"; fi

# Run a command as the PostgreSQL OS user (never with our lock fd open).
as_pg() {
    if ((IS_ROOT)); then runuser -u "$PG_OS_USER" -- "$@" 9>&-; else "$@" 9>&-; fi
}

# --------------------------------------------------------------------------- PID bookkeeping
proc_starttime() { # pid -> process start time (clock ticks since boot), fails if gone
    local stat rest
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }"
    # shellcheck disable=SC2206
    local f=($rest)
    echo "${f[19]}"
}

record_pid() { # name pid
    local st
    st="$(proc_starttime "$2")" || die "process $2 ($1) exited right after start"
    echo "$2 $st" >"$PID_DIR/$1.pid"
}

# our_pid name -> prints the PID if the PID file names a live process that is the very
# process we started (same PID *and* same start time, so a recycled PID never matches).
our_pid() {
    local f="$PID_DIR/$1.pid" pid st now
    [[ -f "$f" ]] || return 1
    read -r pid st <"$f" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    now="$(proc_starttime "$pid")" || return 1
    [[ "$now" == "$st" ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_port() { # port pid name logfile
    local i
    for ((i = 0; i < 600; i++)); do
        port_open "$1" && return 0
        if ! kill -0 "$2" 2>/dev/null; then
            tail -n 30 "$4" >&2 || true
            die "$3 exited during start-up (log: $4)"
        fi
        sleep 0.1
    done
    tail -n 30 "$4" >&2 || true
    die "$3 did not open port $1 within 60 s (log: $4)"
}

stop_pid() { # name pid
    local i
    kill -TERM "$2" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$1 (pid $2) ignored SIGTERM for 30 s; sending SIGKILL"
    kill -KILL "$2" 2>/dev/null || true
}

# Start a long-running process detached from this shell (own session, no lock fd, stdin
# closed) and print its PID. Usage: spawn logfile cmd...
spawn() {
    local logfile="$1"
    shift
    setsid "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
    echo $!
}

# --------------------------------------------------------------------------- secrets
secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

load_secrets() {
    if [[ ! -s "$SECRETS_FILE" ]]; then
        umask 077
        {
            echo "NOTES_ADMIN_PASSWORD=$(secret)"
            echo "CRM_READER_PASSWORD=$(secret)"
        } >"$SECRETS_FILE"
        umask 022
    fi
    # Added after the first release of this script: appended to an existing secrets file.
    if ! grep -q '^IDENTITY_TOKEN=' "$SECRETS_FILE"; then
        (umask 077 && echo "IDENTITY_TOKEN=$(secret)" >>"$SECRETS_FILE")
    fi
    # shellcheck disable=SC1090
    . "$SECRETS_FILE"
}

# --------------------------------------------------------------------------- PostgreSQL
find_pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x "$d/pg_ctl" && -x "$d/initdb" && -x "$d/psql" ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

ensure_pg_installed() {
    PG_BIN="$(find_pg_bin)" && return 0
    local sudo=()
    if ! ((IS_ROOT)); then
        sudo -n true 2>/dev/null \
            || die "PostgreSQL server binaries missing; install the postgresql package (needs root)"
        sudo=(sudo -n)
    fi
    log "installing PostgreSQL (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-common >/dev/null
    # We run our own private cluster; don't let the package create/start a default one.
    if [[ -f /etc/postgresql-common/createcluster.conf ]]; then
        "${sudo[@]}" sed -i -E 's/^#?[[:space:]]*create_main_cluster.*/create_main_cluster = false/' \
            /etc/postgresql-common/createcluster.conf
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN="$(find_pg_bin)" || die "PostgreSQL installed but pg_ctl/initdb not found"
}

# Decide where the cluster lives. Preferred: $STACK_DIR/pg (data) and $STACK_DIR/pg_socket.
# If the postgres OS user cannot reach $STACK_DIR (e.g. repo under a 0700 home/tmp dir) or the
# socket path would be too long, the real directories go to /var/tmp/notes_pipeline-<hash>
# and $STACK_DIR/pg, $STACK_DIR/pg_socket and logs/postgres.log are symlinks to them.
pg_layout() {
    local data="$STACK_DIR/pg" sock="$STACK_DIR/pg_socket" plog="$LOG_DIR/postgres.log"
    if [[ ! -e "$data" && ! -L "$data" ]]; then
        local use_var_tmp=0
        if ((IS_ROOT)) && ! runuser -u "$PG_OS_USER" -- test -x "$STACK_DIR" 2>/dev/null; then
            use_var_tmp=1
        fi
        if ((${#sock} + 20 > 100)); then use_var_tmp=1; fi
        if ((use_var_tmp)); then
            local hash base
            hash="$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
            base="/var/tmp/notes_pipeline-$hash"
            log "postgres user cannot use $STACK_DIR directly; cluster lives in $base"
            mkdir -p "$base/pg" "$base/pg_socket"
            chmod 711 "$base"
            touch "$base/postgres.log"
            ln -sfn "$base/pg" "$data"
            ln -sfn "$base/pg_socket" "$sock"
            ln -sfn "$base/postgres.log" "$plog"
        else
            mkdir -p "$data" "$sock"
            touch "$plog"
        fi
    fi
    PGDATA_REAL="$(readlink -f "$data")"
    PGSOCK_REAL="$(readlink -f "$sock")"
    PGLOG_REAL="$(readlink -f "$plog")"
    mkdir -p "$PGDATA_REAL" "$PGSOCK_REAL"
    touch "$PGLOG_REAL"
    if ((IS_ROOT)); then
        chown "$PG_OS_USER:" "$PGDATA_REAL" "$PGSOCK_REAL" "$PGLOG_REAL"
    fi
    chmod 700 "$PGDATA_REAL" "$PGSOCK_REAL"
    chmod 600 "$PGLOG_REAL"
}

pg_psql() { # db  (SQL on stdin), as the superuser over the private socket
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK_REAL" -p "$PG_PORT" \
        -U "$PG_OS_USER" -d "$1"
}

pg_configure() {
    if [[ ! -f "$PGDATA_REAL/PG_VERSION" ]]; then
        log "initdb $PGDATA_REAL"
        as_pg "$PG_BIN/initdb" -D "$PGDATA_REAL" -U "$PG_OS_USER" -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 --no-instructions >>"$PGLOG_REAL" 2>&1 \
            || { tail -n 20 "$PGLOG_REAL" >&2; die "initdb failed"; }
    fi
    cat >"$PGDATA_REAL/notes_pipeline.conf" <<EOF
# Managed by scripts/stack.sh (rewritten on every up).
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PGSOCK_REAL'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
# FerretDB (pool_max_conns=200 below) + Dagster + tests
max_connections = 400
# Disposable dev/test cluster: don't wait for WAL flush on commit (no corruption risk).
synchronous_commit = off
# FerretDB's tables ask to be analyzed often (devtools/ferretdb_indexes.sql): look every 5 s.
autovacuum_naptime = 5s
EOF
    grep -q "^include_if_exists = 'notes_pipeline.conf'" "$PGDATA_REAL/postgresql.conf" \
        || echo "include_if_exists = 'notes_pipeline.conf'" >>"$PGDATA_REAL/postgresql.conf"
    cat >"$PGDATA_REAL/pg_hba.conf" <<EOF
# Managed by scripts/stack.sh. Superuser only via the private socket (peer);
# TCP only from 127.0.0.1 with a password (SCRAM). No IPv6, no trust.
local   all   all                  peer
host    all   all   127.0.0.1/32   scram-sha-256
EOF
    if ((IS_ROOT)); then
        chown "$PG_OS_USER:" "$PGDATA_REAL/notes_pipeline.conf" "$PGDATA_REAL/pg_hba.conf"
    fi
    chmod 600 "$PGDATA_REAL/notes_pipeline.conf" "$PGDATA_REAL/pg_hba.conf"
}

pg_up() {
    ensure_pg_installed
    pg_layout
    local pid
    if pid="$(our_pid postgres)"; then
        log "postgres already running (pid $pid)"
    else
        # Adopt our own cluster if it runs without a PID file (e.g. the file was deleted).
        if [[ -f "$PGDATA_REAL/postmaster.pid" ]]; then
            pid="$(head -n1 "$PGDATA_REAL/postmaster.pid")"
            if [[ -r "/proc/$pid/cmdline" ]] \
                && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$PGDATA_REAL"; then
                log "adopting running cluster of $PGDATA_REAL (pid $pid)"
                record_pid postgres "$pid"
            fi
        fi
    fi
    if ! pid="$(our_pid postgres)"; then
        port_open "$PG_PORT" && die "port $PG_PORT is in use by a process this stack did not start"
        pg_configure
        log "starting postgres on $HOST:$PG_PORT"
        if ! setsid bash "$0" __pg_ctl_start "$PG_BIN" "$PGDATA_REAL" "$PGLOG_REAL" 9>&-; then
            tail -n 30 "$PGLOG_REAL" >&2 || true
            die "postgres failed to start (log: $PGLOG_REAL)"
        fi
        pid="$(head -n1 "$PGDATA_REAL/postmaster.pid")"
        record_pid postgres "$pid"
    fi
    pg_provision
}

pg_provision() {
    load_secrets
    pg_psql postgres <<SQL
SELECT 'CREATE ROLE notes_admin' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notes_admin')
\gexec
SELECT 'CREATE ROLE crm_reader' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_reader')
\gexec
ALTER ROLE notes_admin WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE PASSWORD '$NOTES_ADMIN_PASSWORD';
ALTER ROLE crm_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$CRM_READER_PASSWORD';
ALTER ROLE crm_reader SET default_transaction_read_only = on;
SELECT format('CREATE DATABASE %I OWNER notes_admin', d)
  FROM unnest(ARRAY['crm', 'dagster', 'identity', 'ferretdb']) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
ALTER DATABASE crm OWNER TO notes_admin;
ALTER DATABASE dagster OWNER TO notes_admin;
ALTER DATABASE identity OWNER TO notes_admin;
ALTER DATABASE ferretdb OWNER TO notes_admin;
REVOKE ALL ON DATABASE crm, dagster, identity, ferretdb FROM PUBLIC;
GRANT CONNECT ON DATABASE crm TO crm_reader;
SQL
    pg_psql crm <<'SQL'
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO crm_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO crm_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE notes_admin IN SCHEMA public GRANT SELECT ON TABLES TO crm_reader;
SQL
    # FerretDB's keyed queries served by GIN indexes, for every collection it has or will
    # create (event trigger + row triggers; docs/MONGODB.md). Idempotent; needs the superuser.
    pg_psql ferretdb <"$ROOT/devtools/ferretdb_indexes.sql"
}

pg_down() {
    local pid
    if pid="$(our_pid postgres)"; then
        pg_layout
        log "stopping postgres (pid $pid)"
        local pm
        pm="$(head -n1 "$PGDATA_REAL/postmaster.pid" 2>/dev/null || true)"
        if [[ "$pm" == "$pid" ]]; then
            PG_BIN="$(find_pg_bin || true)"
            if [[ -z "$PG_BIN" ]] \
                || ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_REAL" -m fast -w -t 60 -s stop; then
                stop_pid postgres "$pid"
            fi
        else
            stop_pid postgres "$pid"
        fi
    else
        log "postgres not running (nothing started by this stack)"
    fi
    rm -f "$PID_DIR/postgres.pid"
}

# --------------------------------------------------------------------------- identity service
# The stand-in for the identity service (Launchpad): devtools/identity_service.py (Starlette
# app served by uvicorn, both installed with dagster-webserver) answers the production contract
# `GET /private/users?company_sso_id=&emails=` from the `identity` database, so the pipeline
# uses the production client (HttpIdentityDirectory) locally too. DSN and token reach it
# through the environment, not argv (visible in ps).
identity_dsn() { echo "postgresql://notes_admin:$NOTES_ADMIN_PASSWORD@$HOST:$PG_PORT/identity"; }
identity_auth() { echo "Bearer $IDENTITY_TOKEN"; }

# Readiness: /healthz answers 200 (database reachable), a lookup with the token answers 200
# with an empty list, and one without it answers 401. Retries for up to 30 s.
identity_ready() {
    NOTES_PIPELINE_IDENTITY_TOKEN="$(identity_auth)" "$PY" - "$IDENTITY_URL" <<'PYEOF' 9>&-
import json
import os
import sys
import time
import urllib.error
import urllib.request

root = sys.argv[1]
token = os.environ["NOTES_PIPELINE_IDENTITY_TOKEN"]
probe = f"{root}/private/users?company_sso_id=_stack_healthcheck&emails=nobody%40invalid"


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


deadline = time.monotonic() + 30
while True:
    try:
        status, _ = get(f"{root}/healthz")
        if status == 200:
            break
        problem = f"/healthz answered {status}"
    except OSError as exc:
        problem = str(exc)
    if time.monotonic() > deadline:
        sys.exit(f"identity stand-in at {root} not ready: {problem}")
    time.sleep(0.2)
status, body = get(probe, {"Authorization": token})
if status != 200 or json.loads(body) != {"data": []}:
    sys.exit(f"identity stand-in rejected the stack's token or answered badly ({status})")
status, _ = get(probe)
if status != 401:
    sys.exit(f"identity stand-in answered {status} without a token (expected 401)")
PYEOF
}

identity_up() {
    local pid
    if pid="$(our_pid identity)"; then
        log "identity stand-in already running (pid $pid)"
    else
        port_open "$IDENTITY_PORT" \
            && die "port $IDENTITY_PORT is in use by a process this stack did not start"
        log "starting identity stand-in on $IDENTITY_URL"
        pid="$(
            cd "$ROOT"
            export NOTES_PIPELINE_IDENTITY_DSN NOTES_PIPELINE_IDENTITY_TOKEN PYTHONPATH="$ROOT"
            NOTES_PIPELINE_IDENTITY_DSN="$(identity_dsn)"
            NOTES_PIPELINE_IDENTITY_TOKEN="$(identity_auth)"
            spawn "$LOG_DIR/identity.log" "$PY" -m devtools.identity_service \
                --host "$HOST" --port "$IDENTITY_PORT"
        )"
        record_pid identity "$pid"
        wait_port "$IDENTITY_PORT" "$pid" "identity stand-in" "$LOG_DIR/identity.log"
    fi
    identity_ready || die "identity stand-in not ready (log: $LOG_DIR/identity.log)"
}

identity_down() {
    local pid
    if pid="$(our_pid identity)"; then
        log "stopping identity stand-in (pid $pid)"
        stop_pid identity "$pid"
    else
        log "identity stand-in not running (nothing started by this stack)"
    fi
    rm -f "$PID_DIR/identity.pid"
}

# --------------------------------------------------------------------------- S3 (moto)
s3_up() {
    [[ -x "$VENV/bin/moto_server" ]] || die "$VENV/bin/moto_server missing: run scripts/bootstrap.sh"
    local pid
    if pid="$(our_pid s3)"; then
        log "moto S3 already running (pid $pid)"
    else
        port_open "$S3_PORT" && die "port $S3_PORT is in use by a process this stack did not start"
        log "starting moto S3 server on $HOST:$S3_PORT"
        pid="$(spawn "$LOG_DIR/moto.log" "$VENV/bin/moto_server" -H "$HOST" -p "$S3_PORT")"
        record_pid s3 "$pid"
        wait_port "$S3_PORT" "$pid" "moto_server" "$LOG_DIR/moto.log"
    fi
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
        "$PY" - "http://$HOST:$S3_PORT" <<'PYEOF' 9>&-
import json
import sys
import urllib.request
import uuid

import boto3

endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for bucket in ("crm-attachments", "cdp-notes"):
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
# The legacy CRM serves attachments as public objects: anonymous GetObject on the bucket.
s3.put_bucket_policy(
    Bucket="crm-attachments",
    Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::crm-attachments/*",
        }],
    }),
)
key = f"_stack_healthcheck/{uuid.uuid4().hex}.txt"
body = b"notes_pipeline stack healthcheck"
s3.put_object(Bucket="crm-attachments", Key=key, Body=body, ContentType="text/plain")
with urllib.request.urlopen(f"{endpoint}/crm-attachments/{key}", timeout=10) as resp:
    got = resp.read()
s3.delete_object(Bucket="crm-attachments", Key=key)
if got != body:
    sys.exit("crm-attachments object not readable over plain HTTP GET")
PYEOF
}

s3_down() {
    local pid
    if pid="$(our_pid s3)"; then
        log "stopping moto S3 (pid $pid)"
        stop_pid s3 "$pid"
    else
        log "moto S3 not running (nothing started by this stack)"
    fi
    rm -f "$PID_DIR/s3.pid"
}

# --------------------------------------------------------------------------- MongoDB
# Version of the GIN index SQL the running FerretDB's sessions were started under.
ferretdb_indexes_sha() { sha256sum "$ROOT/devtools/ferretdb_indexes.sql" | cut -c1-16; }

# external URI = NOTES_PIPELINE_MONGO_URI set and not pointing at this stack's own port
# (a shell that sourced .stack/env must not turn the stack's FerretDB into "external").
mongo_external_uri() {
    local uri="${NOTES_PIPELINE_MONGO_URI:-}"
    [[ -n "$uri" ]] || return 1
    case "$uri" in
        *"$HOST:$MONGO_PORT"* | *"localhost:$MONGO_PORT"*) return 1 ;;
    esac
    echo "$uri"
}

mongo_ping() { # uri -> prints "ferretdb" or "mongodb"; retries for up to 60 s
    "$PY" - "$1" <<'PYEOF' 9>&-
import sys
import time

from pymongo import MongoClient
from pymongo.errors import PyMongoError

deadline = time.monotonic() + 60
while True:
    try:
        with MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000) as client:
            client.admin.command("ping")
            info = client.admin.command("buildInfo")
        print("ferretdb" if "ferretdbVersion" in info else "mongodb")
        break
    except PyMongoError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"MongoDB at {sys.argv[1]} not reachable: {exc}")
        time.sleep(0.5)
PYEOF
}

mongo_up() {
    local ext pid
    if ext="$(mongo_external_uri)"; then
        log "using external MongoDB from NOTES_PIPELINE_MONGO_URI (nothing started)"
        MONGO_URI="$ext"
        MONGO_KIND="$(mongo_ping "$ext")"
        FERRETDB_BACKEND=""
        return 0
    fi
    MONGO_URI="$STACK_MONGO_URI"
    if pid="$(our_pid mongo)"; then
        MONGO_KIND="$(cat "$STACK_DIR/mongo.kind" 2>/dev/null || echo ferretdb)"
        FERRETDB_BACKEND="$(cat "$STACK_DIR/mongo.backend" 2>/dev/null || true)"
        log "$MONGO_KIND already running (pid $pid${FERRETDB_BACKEND:+, backend $FERRETDB_BACKEND})"
        local want="${NOTES_PIPELINE_FERRETDB_BACKEND:-$DEFAULT_FERRETDB_BACKEND}"
        if [[ "$MONGO_KIND" == ferretdb && "$want" != "$FERRETDB_BACKEND" ]]; then
            log "note: requested FerretDB backend '$want' differs; run down + up to switch"
        fi
        if [[ "$MONGO_KIND" == ferretdb && "$FERRETDB_BACKEND" == postgresql \
            && "$(cat "$STACK_DIR/mongo.indexes" 2>/dev/null)" != "$(ferretdb_indexes_sha)" ]]; then
            # Its PostgreSQL sessions predate devtools/ferretdb_indexes.sql (plan_cache_mode
            # reaches new sessions only; their cached generic plans never use the GIN indexes).
            log "restarting FerretDB: devtools/ferretdb_indexes.sql changed since it started"
            mongo_down
        else
            mongo_ping "$MONGO_URI" >/dev/null
            return 0
        fi
    fi
    port_open "$MONGO_PORT" && die "port $MONGO_PORT is in use by a process this stack did not start"
    if command -v mongod >/dev/null 2>&1; then
        MONGO_KIND=mongodb
        FERRETDB_BACKEND=""
        mkdir -p "$STACK_DIR/mongodb"
        log "starting mongod on $HOST:$MONGO_PORT"
        pid="$(spawn "$LOG_DIR/mongod.log" mongod --dbpath "$STACK_DIR/mongodb" \
            --bind_ip "$HOST" --port "$MONGO_PORT")"
    else
        MONGO_KIND=ferretdb
        FERRETDB_BACKEND="${NOTES_PIPELINE_FERRETDB_BACKEND:-$DEFAULT_FERRETDB_BACKEND}"
        local bin
        bin="$(bash "$ROOT/scripts/build_ferretdb.sh" 9>&- | tail -n1)"
        [[ -x "$bin" ]] || die "FerretDB build failed"
        local -a args=(--listen-addr="$HOST:$MONGO_PORT" --telemetry=disable --debug-addr=-
            --state-dir="$STACK_DIR/ferretdb-state" --log-level=warn)
        mkdir -p "$STACK_DIR/ferretdb-state"
        case "$FERRETDB_BACKEND" in
            postgresql)
                # URL (with password) via the environment, not argv (visible in ps).
                # FerretDB 1.x holds one pooled connection per op of an update batch until
                # the batch ends and deadlocks when the pool (default 50) runs dry, so give
                # it headroom; writers still chunk bulk_write (docs/MONGODB.md).
                export FERRETDB_POSTGRESQL_URL="postgres://notes_admin:$NOTES_ADMIN_PASSWORD@$HOST:$PG_PORT/ferretdb?pool_max_conns=200"
                args+=(--handler=postgresql)
                ;;
            sqlite)
                mkdir -p "$STACK_DIR/ferretdb-sqlite"
                args+=(--handler=sqlite --sqlite-url="file:$STACK_DIR/ferretdb-sqlite/")
                ;;
            *) die "NOTES_PIPELINE_FERRETDB_BACKEND must be postgresql or sqlite" ;;
        esac
        log "starting FerretDB ($FERRETDB_BACKEND backend) on $HOST:$MONGO_PORT"
        pid="$(DO_NOT_TRACK=1 spawn "$LOG_DIR/ferretdb.log" "$bin" "${args[@]}")"
        unset FERRETDB_POSTGRESQL_URL
    fi
    record_pid mongo "$pid"
    echo "$MONGO_KIND" >"$STACK_DIR/mongo.kind"
    echo "$FERRETDB_BACKEND" >"$STACK_DIR/mongo.backend"
    ferretdb_indexes_sha >"$STACK_DIR/mongo.indexes"
    wait_port "$MONGO_PORT" "$pid" "$MONGO_KIND" "$LOG_DIR/$([[ $MONGO_KIND == ferretdb ]] && echo ferretdb || echo mongod).log"
    mongo_ping "$MONGO_URI" >/dev/null
}

mongo_down() {
    local pid
    if pid="$(our_pid mongo)"; then
        log "stopping $(cat "$STACK_DIR/mongo.kind" 2>/dev/null || echo mongo) (pid $pid)"
        stop_pid mongo "$pid"
    else
        log "mongo not running (nothing started by this stack)"
    fi
    rm -f "$PID_DIR/mongo.pid"
}

# --------------------------------------------------------------------------- env file
write_env() {
    local dagster_home="$STACK_DIR/dagster_home"
    # NOTES_PIPELINE_DAGSTER_YAML: the instance config DAGSTER_HOME links to (repo-relative,
    # default dagster.yaml; dagster.stock.yaml = stock storage and run launcher, docs/INSTANCE.md)
    local dagster_yaml="$ROOT/${NOTES_PIPELINE_DAGSTER_YAML:-dagster.yaml}"
    [[ -f "$dagster_yaml" ]] || die "NOTES_PIPELINE_DAGSTER_YAML: $dagster_yaml not found"
    mkdir -p "$dagster_home"
    ln -sfn "$dagster_yaml" "$dagster_home/dagster.yaml"
    local tmp="$ENV_FILE.tmp.$$"
    umask 077
    cat >"$tmp" <<EOF
# Generated by scripts/stack.sh up -- do not edit, do not commit (contains local secrets).
# Resource selection: notes_pipeline/resources/selection.py (identity over HTTP: the URL below).
NOTES_PIPELINE_ENV=local
NOTES_PIPELINE_CRM_DSN=postgresql://crm_reader:$CRM_READER_PASSWORD@$HOST:$PG_PORT/crm
NOTES_PIPELINE_CRM_ADMIN_DSN=postgresql://notes_admin:$NOTES_ADMIN_PASSWORD@$HOST:$PG_PORT/crm
NOTES_PIPELINE_IDENTITY_DSN=$(identity_dsn)
NOTES_PIPELINE_IDENTITY_URL=$IDENTITY_URL
NOTES_PIPELINE_IDENTITY_TOKEN='$(identity_auth)'
DAGSTER_PG_HOST=$HOST
DAGSTER_PG_PORT=$PG_PORT
DAGSTER_PG_USER=notes_admin
DAGSTER_PG_PASSWORD=$NOTES_ADMIN_PASSWORD
DAGSTER_PG_DB=dagster
DAGSTER_HOME=$dagster_home
NOTES_PIPELINE_MONGO_URI=$MONGO_URI
NOTES_PIPELINE_MONGO_KIND=$MONGO_KIND
NOTES_PIPELINE_MONGO_DB=cdp
NOTES_PIPELINE_FERRETDB_BACKEND=$FERRETDB_BACKEND
NOTES_PIPELINE_FERRETDB_DSN=postgresql://notes_admin:$NOTES_ADMIN_PASSWORD@$HOST:$PG_PORT/ferretdb
NOTES_PIPELINE_S3_ENDPOINT_URL=http://$HOST:$S3_PORT
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
AWS_DEFAULT_REGION=us-east-1
NOTES_PIPELINE_CRM_BUCKET=crm-attachments
NOTES_PIPELINE_CDP_BUCKET=cdp-notes
NOTES_PIPELINE_CRM_ATTACHMENT_BASE_URL=http://$HOST:$S3_PORT/crm-attachments
NOTES_PIPELINE_ATTACHMENT_ALLOWED_HOSTS=$HOST:$S3_PORT
NOTES_PIPELINE_CDP_PROXY_BASE_URL=https://cdp.local.test/attachments
EOF
    umask 022
    mv -f "$tmp" "$ENV_FILE"
}

# --------------------------------------------------------------------------- commands
lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    flock -w 600 9 || die "another scripts/stack.sh holds $STACK_DIR/.lock"
}

cmd_up() {
    lock
    mkdir -p "$PID_DIR" "$LOG_DIR"
    if [[ ! -x "$PY" || ! -x "$VENV/bin/moto_server" ]]; then
        bash "$ROOT/scripts/bootstrap.sh" 9>&-
    fi
    load_secrets
    pg_up
    identity_up
    s3_up
    mongo_up
    write_env
    log "up: postgres $HOST:$PG_PORT, identity $IDENTITY_URL, s3 http://$HOST:$S3_PORT," \
        "$MONGO_KIND $MONGO_URI"
    log "env: $ENV_FILE"
}

cmd_down() {
    [[ -d "$STACK_DIR" ]] || { log "nothing to stop ($STACK_DIR does not exist)"; return 0; }
    lock
    mkdir -p "$PID_DIR"
    mongo_down
    s3_down
    identity_down
    pg_down
}

cmd_status() {
    local all=0 pid
    show() { # name pidname port
        if pid="$(our_pid "$2")"; then
            if port_open "$3"; then
                echo "$1: up (pid $pid, $HOST:$3)"
            else
                echo "$1: starting/unhealthy (pid $pid, port $3 closed)"
                all=1
            fi
        else
            echo "$1: down"
            all=1
        fi
    }
    show postgres postgres "$PG_PORT"
    show identity identity "$IDENTITY_PORT"
    show s3 s3 "$S3_PORT"
    local ext
    if ext="$(mongo_external_uri)"; then
        echo "mongo: external ($ext, not managed by this stack)"
    else
        show "mongo ($(cat "$STACK_DIR/mongo.kind" 2>/dev/null || echo '?'))" mongo "$MONGO_PORT"
    fi
    return "$all"
}

cmd_destroy() {
    cmd_down
    local t
    for t in "$STACK_DIR/pg" "$STACK_DIR/pg_socket" "$LOG_DIR/postgres.log"; do
        if [[ -L "$t" ]]; then
            local real
            real="$(readlink -f "$t")"
            rm -rf "$real"
            rmdir "$(dirname "$real")" 2>/dev/null || true
        fi
    done
    rm -rf "$STACK_DIR"
    log "destroyed $STACK_DIR"
}

# One service at a time (fault injection: benchmarks/reliability.py, RELIABILITY.md).
SERVICES="postgres identity s3 mongo"

service_arg() { # name -> validated service name
    local s
    for s in $SERVICES; do
        [[ "${1:-}" == "$s" ]] && { echo "$s"; return 0; }
    done
    die "unknown service '${1:-}' (one of: $SERVICES)"
}

require_managed() { # service: an external MongoDB is not ours to stop, start or pause
    if [[ "$1" == mongo ]] && mongo_external_uri >/dev/null; then
        die "mongo is external (NOTES_PIPELINE_MONGO_URI); this stack does not manage it"
    fi
}

cmd_service() { # action service
    local action="$1" svc
    svc="$(service_arg "${2:-}")"
    require_managed "$svc"
    lock
    mkdir -p "$PID_DIR" "$LOG_DIR"
    load_secrets
    case "$action" in
        stop) "${svc/postgres/pg}_down" ;;
        start) "${svc/postgres/pg}_up" ;;
        restart)
            "${svc/postgres/pg}_down"
            "${svc/postgres/pg}_up"
            ;;
        pause | resume)
            [[ "$svc" != postgres ]] || die "postgres is many processes: use stop/start/restart"
            local pid
            pid="$(our_pid "$svc")" || die "$svc is not running (nothing started by this stack)"
            if [[ "$action" == pause ]]; then
                kill -STOP "$pid"
                log "$svc (pid $pid) paused: port open, nothing answered until resume"
            else
                kill -CONT "$pid"
                log "$svc (pid $pid) resumed"
            fi
            ;;
    esac
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    destroy) cmd_destroy ;;
    stop | start | restart | pause | resume) cmd_service "$1" "${2:-}" ;;
    __pg_ctl_start) # internal: run pg_ctl start as the postgres user in a fresh session
        PG_BIN="$2"
        as_pg "$PG_BIN/pg_ctl" -D "$3" -l "$4" -w -t 60 -s start
        ;;
    *)
        echo "usage: $0 up|down|status|destroy, or stop|start|restart|pause|resume SERVICE" >&2
        exit 2
        ;;
esac
