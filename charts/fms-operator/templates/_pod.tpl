{{/*
The operator pod template, shared by the Deployment (standalone) and the
StatefulSet (kopf peering, where each pod needs a priority of its own).
*/}}
{{- define "fms-operator.podTemplate" -}}
metadata:
  labels:
    {{- include "fms-operator.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "fms-operator.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: operator
      image: {{ include "fms-operator.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # Flags of fms-operator (operator/fms_operator/__main__.py): cluster-wide unless
      # --namespace is given, standalone unless --peering is given.
      args:
        - --liveness=http://0.0.0.0:{{ .Values.operator.healthPort }}/healthz
        - --metrics-port={{ .Values.operator.metricsPort }}
        {{- range .Values.operator.watchNamespaces }}
        - --namespace={{ . }}
        {{- end }}
        {{- if .Values.peering.enabled }}
        - --peering={{ include "fms-operator.peeringName" . }}
        # kopf pauses every peer when two share a priority; each StatefulSet pod uses its index.
        - --priority=$(FMS_OPERATOR_PRIORITY)
        {{- end }}
        {{- if eq .Values.operator.logLevel "debug" }}
        - --verbose
        {{- end }}
        {{- with .Values.operator.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or .Values.peering.enabled .Values.operator.extraEnv }}
      env:
        {{- if .Values.peering.enabled }}
        - name: FMS_OPERATOR_PRIORITY
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with .Values.operator.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: health
          containerPort: {{ .Values.operator.healthPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ .Values.operator.metricsPort }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: health
        initialDelaySeconds: 10
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /healthz
          port: health
        periodSeconds: 10
        timeoutSeconds: 5
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        # readOnlyRootFilesystem: Python and kopf still want a writable temp dir.
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
