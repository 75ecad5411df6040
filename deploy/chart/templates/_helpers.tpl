{{- define "ferry.labels" -}}
app.kubernetes.io/component: {{ trimPrefix "ferry-" . }}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: ferry
{{- end -}}

{{- define "ferry.podSecurity" -}}
fsGroup: 999
runAsGroup: 999
runAsNonRoot: true
runAsUser: 999
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ferry.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
  - ALL
readOnlyRootFilesystem: true
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ferry.probe" -}}
failureThreshold: 3
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  {{- if eq .port "https" }}
  scheme: HTTPS
  {{- end }}
periodSeconds: {{ .period }}
timeoutSeconds: 5
{{- end -}}

{{/* The pod spec parts both Deployments share: (list root name) */}}
{{- define "ferry.podCommon" -}}
{{- $name := index . 1 -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - podAffinityTerm:
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: {{ $name }}
        topologyKey: kubernetes.io/hostname
      weight: 100
securityContext:
  {{- include "ferry.podSecurity" . | nindent 2 }}
serviceAccountName: {{ $name }}
terminationGracePeriodSeconds: 30
volumes:
- emptyDir: {}
  name: cache
- emptyDir: {}
  name: tmp
{{- end -}}

{{- define "ferry.containerCommon" -}}
{{- $root := index . 0 -}}
env:
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: HOME
  value: /home/ferry
image: {{ $root.Values.image }}
imagePullPolicy: {{ $root.Values.imagePullPolicy }}
securityContext:
  {{- include "ferry.containerSecurity" . | nindent 2 }}
volumeMounts:
- mountPath: /home/ferry/.cache
  name: cache
- mountPath: /tmp
  name: tmp
{{- end -}}
