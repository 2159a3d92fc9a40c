{{/* The chart's name and the release's full name (63 characters at most, DNS-1123). */}}
{{- define "kernelyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kernelyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels that pick the gateway's pods (Service, NetworkPolicy, gateway_pod_labels). */}}
{{- define "kernelyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kernelyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kernelyard.labels" -}}
{{ include "kernelyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kernelyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kernelyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kernelyard.secretName" -}}
{{- default (include "kernelyard.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "kernelyard.instance" -}}
{{- default (include "kernelyard.fullname" .) .Values.kubernetes.instance -}}
{{- end -}}

{{/* The kernel namespaces, as a JSON list: the default one, each kernelspec's, the extra
     ones and, in namespaceMode user, one per userMap user. */}}
{{- define "kernelyard.kernelNamespaces" -}}
{{- $k := .Values.kubernetes -}}
{{- $ns := list $k.namespace -}}
{{- range $name, $spec := .Values.kernelspecs -}}
{{- if $spec.namespace -}}{{- $ns = append $ns $spec.namespace -}}{{- end -}}
{{- end -}}
{{- $ns = concat $ns $k.extraNamespaces -}}
{{- if eq $k.namespaceMode "user" -}}
{{- range $user := keys $k.userMap | sortAlpha -}}
{{- $ns = append $ns (printf "%s%s" $k.userNamespacePrefix $user) -}}
{{- end -}}
{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{- define "kernelyard.defaultKernelspec" -}}
{{- if .Values.defaultKernelspec -}}
{{- if not (hasKey .Values.kernelspecs .Values.defaultKernelspec) -}}
{{- fail (printf "defaultKernelspec %q is not one of kernelspecs" .Values.defaultKernelspec) -}}
{{- end -}}
{{- .Values.defaultKernelspec -}}
{{- else -}}
{{- keys .Values.kernelspecs | sortAlpha | first -}}
{{- end -}}
{{- end -}}

{{/* kernel.json of one kernelspec: (dict "root" $ "name" NAME "spec" SPEC). */}}
{{- define "kernelyard.kernelJson" -}}
{{- $s := .spec -}}
{{- $python := default "python3" $s.python -}}
{{- $config := dict "image" $s.image "python" $python -}}
{{- if $s.namespace -}}{{- $_ := set $config "namespace" $s.namespace -}}{{- end -}}
{{- if $s.resourceLimits -}}{{- $_ := set $config "resource_limits" $s.resourceLimits -}}{{- end -}}
{{- $config = mergeOverwrite $config (deepCopy (default (dict) $s.config)) -}}
{{- $argv := default (list "kernelyard-launcher" "--" "{python}" "-m" "ipykernel_launcher" "-f" "{connection_file}") $s.argv -}}
{{- $spec := dict "argv" $argv "display_name" (default .name $s.displayName) "language" (default "python" $s.language) "interrupt_mode" "signal" "metadata" (dict "kernel_provisioner" (dict "provisioner_name" "kernelyard-kubernetes" "config" $config)) -}}
{{- if $s.env -}}{{- $_ := set $spec "env" $s.env -}}{{- end -}}
{{- toPrettyJson $spec -}}
{{- end -}}

{{/* kernelyard_config.json: the settings the values derive, with .Values.config merged over. */}}
{{- define "kernelyard.config" -}}
{{- $v := .Values -}}
{{- $q := $v.quotas -}}
{{- $app := dict "authenticators" $v.auth.authenticators "log_level" $v.logLevel -}}
{{- if $v.auth.allowUnauthenticated -}}{{- $_ := set $app "allow_unauthenticated" true -}}{{- end -}}
{{- if not (kindIs "invalid" $q.maxKernelsPerUser) -}}{{- $_ := set $app "max_kernels_per_user" $q.maxKernelsPerUser -}}{{- end -}}
{{- if $q.userMaxKernels -}}{{- $_ := set $app "user_max_kernels" $q.userMaxKernels -}}{{- end -}}
{{- if $q.groupMaxKernelsPerUser -}}{{- $_ := set $app "group_max_kernels_per_user" $q.groupMaxKernelsPerUser -}}{{- end -}}
{{- if $q.kernelspecMaxKernels -}}{{- $_ := set $app "kernelspec_max_kernels" $q.kernelspecMaxKernels -}}{{- end -}}
{{- if $q.groupResourceLimits -}}{{- $_ := set $app "group_resource_limits" $q.groupResourceLimits -}}{{- end -}}
{{- $k := $v.kubernetes -}}
{{- $prov := dict "kube_config" "in-cluster" "namespace" $k.namespace "namespace_mode" $k.namespaceMode "user_namespace_prefix" $k.userNamespacePrefix "instance" (include "kernelyard.instance" .) "image_pull_policy" $k.imagePullPolicy "user_map_source" "static" "user_map" $k.userMap "min_uid" $k.minUid "gateway_pod_labels" (include "kernelyard.selectorLabels" . | fromYaml) "gateway_namespace" .Release.Namespace "network_policy" (and $v.networkPolicy.enabled $v.rbac.clusterWide) -}}
{{- $cfg := dict "KernelyardApp" $app "StoreFactory" (dict "url" "sqlite:////var/lib/kernelyard/kernelyard.db") "KubernetesProvisioner" $prov -}}
{{- $_ := set $cfg "GatewayMappingKernelManager" (dict "max_kernels" $q.maxKernels "default_kernel_name" (include "kernelyard.defaultKernelspec" .)) -}}
{{- $_ := set $cfg "KernelSpecManager" (dict "ensure_native_kernel" false "allowed_kernelspecs" (keys $v.kernelspecs | sortAlpha)) -}}
{{- toPrettyJson (mergeOverwrite $cfg (deepCopy $v.config)) -}}
{{- end -}}
