{{/*
Chart name, truncated to the 63 characters of a label value.
*/}}
{{- define "buildkit-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: <release>-<chart>, or the release name when it contains the chart
name already; truncated to 63 characters (the longest name some kinds accept).
*/}}
{{- define "buildkit-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "buildkit-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator's pod; never change them (a Deployment selector is immutable).
*/}}
{{- define "buildkit-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buildkit-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object of the chart.
*/}}
{{- define "buildkit-operator.labels" -}}
helm.sh/chart: {{ include "buildkit-operator.chart" . }}
{{ include "buildkit-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: buildkit-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "buildkit-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "buildkit-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image: repository@digest, or repository:tag (tag defaulting to the appVersion).
*/}}
{{- define "buildkit-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Arguments of `buildkit-operator`: run, its scope, the liveness and metrics endpoints.
*/}}
{{- define "buildkit-operator.args" -}}
- run
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- $host := .Values.health.bindAddress }}
{{- if contains ":" $host }}
{{- $host = printf "[%s]" $host }}
{{- end }}
- --liveness=http://{{ $host }}:{{ .Values.health.port }}/healthz
- --client-certificate-lifetime={{ .Values.clientCertificates.defaultLifetime }}
- --client-certificate-max-lifetime={{ .Values.clientCertificates.maxLifetime }}
{{- if .Values.metrics.enabled }}
- --metrics-port={{ .Values.metrics.port }}
{{- end }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
{{- with .Values.leaderElection }}
{{- if .enabled }}
- --leader-elect
- --leader-election-namespace={{ $.Release.Namespace }}
- --leader-election-id={{ include "buildkit-operator.leaseName" $ }}
- --lease-duration={{ .leaseDuration }}
- --renew-deadline={{ .renewDeadline }}
- --retry-period={{ .retryPeriod }}
{{- end }}
{{- end }}
{{- with .Values.builderDefaults }}
{{- with .image.repository }}
- --default-image-repository={{ . }}
{{- end }}
{{- with .image.rootful }}
- --default-image-rootful={{ . }}
{{- end }}
{{- with .image.rootless }}
- --default-image-rootless={{ . }}
{{- end }}
{{- with .cache.size }}
- --default-cache-size={{ . }}
{{- end }}
{{- with .cache.storageClassName }}
- --default-storage-class={{ . }}
{{- end }}
{{- with .resources }}
- --default-resources={{ toJson . }}
{{- end }}
{{- range $registry, $hosts := .registryMirrors }}
- --default-registry-mirror={{ $registry }}={{ join "," $hosts }}
{{- end }}
{{- end }}
{{- end }}

{{/*
What the operator does with the API, and nothing more. Shared by the ClusterRole (every
namespace) and the per-namespace Roles (watchNamespaces).
*/}}
{{- define "buildkit-operator.rules" -}}
# Builders: watched and read; the operator writes only their status. Never created,
# updated, patched or deleted: they belong to their users.
- apiGroups: ["buildkit.dev"]
  resources: ["builders"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["buildkit.dev"]
  resources: ["builders/status"]
  verbs: ["get", "patch"]
# Children carry an owner reference with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened clusters),
# setting it requires update on the owner's finalizers. The operator sets no finalizer.
- apiGroups: ["buildkit.dev"]
  resources: ["builders/finalizers"]
  verbs: ["update"]
# The children of a Builder: written with server-side apply (patch; create when absent),
# recreated where a field is immutable (delete), watched to repair drift within seconds.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The addresses of a Builder's daemons, to ask a daemon whether it is building before a
# change stops it: the endpoints of its Service.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
# Why a daemon does not run (a crash loop, an image pull, scheduling), from its pods'
# status: listed and watched by the operator's own labels only (RBAC cannot confine a
# read to a label; the operator reads every Secret of these namespaces already, so a pod's
# spec holds nothing more). No get, no logs, no exec: a pod's status is all it reads.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# One Event per action taken, on the Builder (core Events, only ever created).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Name of the Lease the replicas elect their leader with (in the release namespace).
*/}}
{{- define "buildkit-operator.leaseName" -}}
{{- include "buildkit-operator.fullname" . }}
{{- end }}

{{/*
Name of the ValidatingAdmissionPolicy and its binding (cluster-scoped: one per release).
*/}}
{{- define "buildkit-operator.policyName" -}}
{{- printf "%s-builders" (include "buildkit-operator.fullname" .) }}
{{- end }}

{{/*
Name of the second policy and its binding: the Deployments the operator writes.
*/}}
{{- define "buildkit-operator.deploymentPolicyName" -}}
{{- printf "%s-deployments" (include "buildkit-operator.fullname" .) }}
{{- end }}

{{/*
The operator's user name in its requests: its ServiceAccount's unless overridden.
*/}}
{{- define "buildkit-operator.operatorUsername" -}}
{{- .Values.policy.operatorDeployments.username | default (printf "system:serviceaccount:%s:%s" .Release.Namespace (include "buildkit-operator.serviceAccountName" .)) }}
{{- end }}

{{/*
CEL: whether the request's namespace opted in, given an opt-in value ({namespaces,
namespaceLabel}): listed by name, or labelled <namespaceLabel>=true. Needs the policy
variable `labels` (the namespace's labels).
*/}}
{{- define "buildkit-operator.optedIn" -}}
request.namespace in {{ .namespaces | default list | toJson }} ||
({{ .namespaceLabel | toJson }} in variables.labels &&
variables.labels[{{ .namespaceLabel | toJson }}] == 'true')
{{- end }}

{{/*
A regular expression matching any of a list of label-key globs (`*`: any characters).
*/}}
{{- define "buildkit-operator.globs" -}}
{{- $res := list }}
{{- range . }}
{{- $res = append $res (regexQuoteMeta . | replace "\\*" ".*") }}
{{- end }}
{{- printf "^(?:%s)$" (join "|" $res) }}
{{- end }}

{{/*
CEL, over a node selector requirement `e`: whether it selects nodes by one of a list of
labels (In, Exists, Gt, Lt; NotIn and DoesNotExist keep pods away, so they may name any).
*/}}
{{- define "buildkit-operator.selectsBy" -}}
has(e.key) && e.key in {{ toJson . }} && !(has(e.operator) && e.operator in ['NotIn', 'DoesNotExist'])
{{- end }}
