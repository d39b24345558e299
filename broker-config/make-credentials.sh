#!/usr/bin/env bash
# Make the password file and the per-role ACL for broker-config/secure.conf.
#   make-credentials.sh OUT_DIR ROLE:NAME[:PASSWORD] ...
# ROLE is coordinator, operator (may deploy), agent or client; NAME is the MQTT user name, and for agents and
# clients also their id in topics (agents/NAME/..., clients/NAME/...). A password is
# made up when none is given. Writes OUT_DIR/passwd, OUT_DIR/acl and
# OUT_DIR/credentials.txt ("role name password" per line, mode 600).
# The topic namespace is $SPLITMQ_NAMESPACE (default splitmq/v1).
set -euo pipefail
out=${1:?usage: make-credentials.sh OUT_DIR ROLE:NAME[:PASSWORD] ...}
shift
[ $# -gt 0 ] || { echo "name at least one ROLE:NAME" >&2; exit 2; }
ns=${SPLITMQ_NAMESPACE:-splitmq/v1}
passwd_tool=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
mkdir -p "$out"
: > "$out/passwd"
umask 077
: > "$out/credentials.txt"
{
  echo "# splitmq ACL, made by make-credentials.sh: each user gets only its role's topics."
  echo "# Namespace: $ns"
} > "$out/acl"

for spec in "$@"; do
  IFS=: read -r role name password <<< "$spec"
  [[ -n ${name:-} && $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "bad name in '$spec'" >&2; exit 2; }
  password=${password:-$(openssl rand -hex 16)}
  "$passwd_tool" -b "$out/passwd" "$name" "$password"
  echo "$role $name $password" >> "$out/credentials.txt"
  {
    echo
    echo "# $role $name"
    echo "user $name"
    case $role in
      coordinator)
        echo "topic readwrite $ns/#"
        ;;
      agent)
        echo "topic write $ns/agents/$name/status"
        echo "topic write $ns/agents/$name/telemetry"
        echo "topic write $ns/agents/$name/events"
        # readwrite: the agent times the broker's round trip with a ping to itself.
        echo "topic readwrite $ns/agents/$name/cmd"
        echo "topic read $ns/agents/$name/pool"
        echo "topic write $ns/pool/fetch"
        echo "topic read $ns/stage/+/+/$name"
        echo "topic read $ns/stage/+/+/any"
        echo "topic write $ns/stage/#"
        # hops to agents of other sites, or of the central broker (bridge.conf)
        echo "topic write $ns/sites/+/stage/#"
        echo "topic write $ns/central/stage/#"
        echo "topic write $ns/clients/+/result"
        echo "topic read $ns/deployments/#"
        echo "topic read $ns/coordinators/lease"
        ;;
      operator)
        echo "topic write $ns/control/deploy"
        echo "topic read $ns/clients/$name/#"
        echo "topic read $ns/deployments/#"
        echo "topic read $ns/agents/+/status"
        echo "topic read $ns/agents/+/telemetry"
        ;;
      client)
        echo "topic write $ns/plans/request"
        echo "topic read $ns/clients/$name/#"
        echo "topic write $ns/stage/#"
        echo "topic write $ns/sites/+/stage/#"
        echo "topic read $ns/deployments/#"
        echo "topic read $ns/agents/+/status"
        echo "topic read $ns/agents/+/telemetry"
        ;;
      *)
        echo "unknown role '$role' in '$spec' (coordinator, operator, agent or client)" >&2
        exit 2
        ;;
    esac
  } >> "$out/acl"
done
chmod 644 "$out/passwd" "$out/acl"
echo "credentials for $# users in $out (passwords in $out/credentials.txt)"
