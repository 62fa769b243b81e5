// Package tools pins the helm that renders the chart in ../edge-proxy (go
// tool helm, from this module's go.mod) and holds the chart's tests: the
// rendered objects read back as Kubernetes types, and deploy/kubernetes
// checked against what the chart renders. It is a module of its own so that
// helm and the Kubernetes types never reach the proxy's go.mod.
package tools
