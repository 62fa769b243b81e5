package tools

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// The chart is rendered by helm itself (`go tool helm template`, the
// version go.mod pins) and read back as Kubernetes' own types, so a check
// reads a field, not a line of YAML.

const chartDir = "../edge-proxy"

// rendered is one `helm template` output, by kind and name.
type rendered struct {
	t    *testing.T
	docs map[string][]byte // "Kind/name" → the object's YAML
}

// helmTemplate renders the chart as release edge-proxy with the given
// helm flags (--set …, -f …).
func helmTemplate(t *testing.T, flags ...string) rendered {
	t.Helper()
	out, err := runHelm(flags...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(flags, " "), err, out)
	}
	r := rendered{t: t, docs: map[string][]byte{}}
	for doc := range strings.SplitSeq(string(out), "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("helm template output is not YAML: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue
		}
		r.docs[meta.Kind+"/"+meta.Metadata.Name] = []byte(doc)
	}
	return r
}

func runHelm(flags ...string) ([]byte, error) {
	args := append([]string{"tool", "helm", "template", "edge-proxy", chartDir}, flags...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.Bytes(), err
	}
	return out, nil
}

// object decodes the object kind/name into v; it fails the test if the
// output has none.
func (r rendered) object(kind, name string, v any) {
	r.t.Helper()
	doc, ok := r.docs[kind+"/"+name]
	if !ok {
		r.t.Fatalf("no %s %s rendered; have %v", kind, name, r.names())
	}
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		r.t.Fatalf("%s %s: %v\n%s", kind, name, err, doc)
	}
}

func (r rendered) has(kind, name string) bool {
	_, ok := r.docs[kind+"/"+name]
	return ok
}

func (r rendered) names() []string {
	var out []string
	for k := range r.docs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func container(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("deployment has %d containers; want 1", n)
	}
	return d.Spec.Template.Spec.Containers[0]
}

func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	if i < 0 {
		return corev1.EnvVar{}, false
	}
	return c.Env[i], true
}

func mount(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path })
	if i < 0 {
		return corev1.VolumeMount{}, false
	}
	return c.VolumeMounts[i], true
}

func volume(d *appsv1.Deployment, name string) (corev1.Volume, bool) {
	vs := d.Spec.Template.Spec.Volumes
	i := slices.IndexFunc(vs, func(v corev1.Volume) bool { return v.Name == name })
	if i < 0 {
		return corev1.Volume{}, false
	}
	return vs[i], true
}

// checkPod checks what every rendering shares: the probes, the port, the
// non-root read-only pod, the memory settings, the config mounted as a
// folder (so Secret updates reach it), and the cache.
func checkPod(t *testing.T, d *appsv1.Deployment, scheme corev1.URIScheme, configSecret string) {
	t.Helper()
	c := container(t, d)
	pod := d.Spec.Template.Spec
	if got := c.Ports; len(got) != 1 || got[0].Name != "http" || got[0].ContainerPort != 8000 {
		t.Errorf("ports = %+v; want http 8000", got)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/proxy/health/liveness"},
		{"readiness", c.ReadinessProbe, "/proxy/health/readiness"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe = %+v; want an HTTP GET", p.name, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port.String() != "http" || g.Scheme != scheme {
			t.Errorf("%s probe = %s %s port %s; want %s %s port http", p.name, g.Scheme, g.Path, g.Port.String(), scheme, p.path)
		}
	}
	ps := pod.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 10001 ||
		ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v; want runAsNonRoot, runAsUser 10001, seccomp RuntimeDefault", ps)
	}
	cs := c.SecurityContext
	if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
		cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
		cs.RunAsNonRoot == nil || !*cs.RunAsNonRoot ||
		cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) > 0 {
		t.Errorf("container securityContext = %+v; want read-only root, no privilege escalation, non-root, every capability dropped", cs)
	}
	if a := pod.AutomountServiceAccountToken; a == nil || *a {
		t.Error("automountServiceAccountToken is not false; the proxy never calls the Kubernetes API")
	}
	if limit := c.Resources.Limits.Memory().String(); limit != "64Mi" {
		t.Errorf("memory limit = %s; want 64Mi", limit)
	}
	if e, _ := env(c, "GOMEMLIMIT"); e.Value != "54MiB" {
		t.Errorf("GOMEMLIMIT = %q; want 54MiB", e.Value)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 25 {
		t.Errorf("terminationGracePeriodSeconds = %v; want at least drain_seconds + shutdown_timeout_seconds (25)", g)
	}

	m, ok := mount(c, "/app")
	if !ok || m.Name != "config" || !m.ReadOnly || m.SubPath != "" {
		t.Errorf("/app mount = %+v; want the config volume, read-only, as a folder (a subPath mount never sees an update)", m)
	}
	v, ok := volume(d, "config")
	if !ok || v.Secret == nil || v.Secret.SecretName != configSecret {
		t.Errorf("config volume = %+v; want Secret %s", v, configSecret)
	}
	if m, ok := mount(c, "/var/cache/edge-proxy"); !ok || m.Name != "cache" || m.ReadOnly {
		t.Errorf("cache mount = %+v; want the writable cache volume", m)
	}
	if v, ok := volume(d, "cache"); !ok || v.EmptyDir == nil {
		t.Errorf("cache volume = %+v; want an emptyDir", v)
	}
}

// checkPeers checks the headless Service behind PEERS and the variables
// that point the proxy at it.
func checkPeers(t *testing.T, r rendered, d *appsv1.Deployment, wantPeers, secretName, secretKey string) {
	t.Helper()
	var peers corev1.Service
	r.object("Service", "edge-proxy-peers", &peers)
	if peers.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("peers Service clusterIP = %q; want None (headless: its name resolves to every replica)", peers.Spec.ClusterIP)
	}
	if !peers.Spec.PublishNotReadyAddresses {
		t.Error("peers Service does not publish replicas that are not ready; they need pushes most")
	}
	if !selects(peers.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("peers Service selector %v does not select the pods %v", peers.Spec.Selector, d.Spec.Template.Labels)
	}
	c := container(t, d)
	e, _ := env(c, "PEERS")
	var urls []string
	if err := json.Unmarshal([]byte(e.Value), &urls); err != nil || !slices.Equal(urls, []string{wantPeers}) {
		t.Errorf("PEERS = %q; want [%q]", e.Value, wantPeers)
	}
	e, _ = env(c, "PEER_SECRET")
	if ref := e.ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secretName || ref.SecretKeyRef.Key != secretKey {
		t.Errorf("PEER_SECRET = %+v; want Secret %s key %s", e, secretName, secretKey)
	}
}

// selects reports whether every label of selector is in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestChartDefaults(t *testing.T) {
	r := helmTemplate(t)
	var d appsv1.Deployment
	r.object("Deployment", "edge-proxy", &d)
	checkPod(t, &d, corev1.URISchemeHTTP, "edge-proxy-config")
	checkPeers(t, r, &d, "http://edge-proxy-peers:8000", "edge-proxy-peers", "peer-secret")
	c := container(t, &d)
	if e, _ := env(c, "SERVER"); e.Value != `{"port":8000}` {
		t.Errorf("SERVER = %q; want the port only", e.Value)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("replicas = %d with autoscaling on; the HPA owns the count", *d.Spec.Replicas)
	}
	if got := d.Spec.Template.Annotations["prometheus.io/scrape"]; got != "true" {
		t.Errorf("prometheus.io/scrape = %q without a ServiceMonitor; want true", got)
	}

	var svc corev1.Service
	r.object("Service", "edge-proxy", &svc)
	if svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8000 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service = %+v; want a ClusterIP Service on 8000 to the http port", svc.Spec)
	}
	if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}

	var cfg corev1.Secret
	r.object("Secret", "edge-proxy-config", &cfg)
	var config struct {
		Pairs []map[string]string `json:"environment_key_pairs"`
		Cache string              `json:"cache_dir"`
	}
	if err := json.Unmarshal([]byte(cfg.StringData["config.json"]), &config); err != nil || len(config.Pairs) != 1 || config.Cache != "/var/cache/edge-proxy" {
		t.Errorf("config.json = %q (%v); want one key pair and cache_dir /var/cache/edge-proxy", cfg.StringData["config.json"], err)
	}
	var peerSecret corev1.Secret
	r.object("Secret", "edge-proxy-peers", &peerSecret)
	if s := peerSecret.StringData["peer-secret"]; len(s) < 16 {
		t.Errorf("generated peer secret %q is shorter than the 16 characters peer_secret needs", s)
	}

	var hpa autoscalingv2.HorizontalPodAutoscaler
	r.object("HorizontalPodAutoscaler", "edge-proxy", &hpa)
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != "edge-proxy" || *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 10 {
		t.Errorf("HPA = %+v; want the Deployment, 2 to 10", hpa.Spec)
	}
	var pdb policyv1.PodDisruptionBudget
	r.object("PodDisruptionBudget", "edge-proxy", &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("PDB = %+v; want maxUnavailable 1 over the pods", pdb.Spec)
	}
	if r.has("ServiceMonitor", "edge-proxy") {
		t.Error("a ServiceMonitor is rendered while serviceMonitor.enabled is false")
	}
}

func TestChartValues(t *testing.T) {
	r := helmTemplate(t,
		"--set", "existingSecret.name=my-config", "--set", "existingSecret.key=proxy.json",
		"--set", "tls.enabled=true", "--set", "tls.secretName=edge-tls",
		"--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus",
		"--set", "autoscaling.enabled=false", "--set", "replicaCount=3",
		"--set", "peers.existingSecret.name=my-peers", "--set", "peers.existingSecret.key=secret",
		"--set", "podDisruptionBudget.enabled=false")
	var d appsv1.Deployment
	r.object("Deployment", "edge-proxy", &d)
	checkPod(t, &d, corev1.URISchemeHTTPS, "my-config")
	checkPeers(t, r, &d, "https://edge-proxy-peers:8000", "my-peers", "secret")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v; want 3", d.Spec.Replicas)
	}
	v, _ := volume(&d, "config")
	if items := v.Secret.Items; len(items) != 1 || items[0].Key != "proxy.json" || items[0].Path != "config.json" {
		t.Errorf("config volume items = %+v; want proxy.json as config.json", items)
	}
	c := container(t, &d)
	if m, ok := mount(c, "/etc/edge-proxy/tls"); !ok || m.Name != "tls" || !m.ReadOnly || m.SubPath != "" {
		t.Errorf("TLS mount = %+v; want the tls volume, read-only, as a folder", m)
	}
	if v, ok := volume(&d, "tls"); !ok || v.Secret == nil || v.Secret.SecretName != "edge-tls" {
		t.Errorf("tls volume = %+v; want Secret edge-tls", v)
	}
	e, _ := env(c, "SERVER")
	var server struct {
		Port int               `json:"port"`
		TLS  map[string]string `json:"tls"`
	}
	if err := json.Unmarshal([]byte(e.Value), &server); err != nil || server.Port != 8000 ||
		server.TLS["cert_file"] != "/etc/edge-proxy/tls/tls.crt" || server.TLS["key_file"] != "/etc/edge-proxy/tls/tls.key" {
		t.Errorf("SERVER = %q; want port 8000 and the mounted certificate", e.Value)
	}
	if _, ok := d.Spec.Template.Annotations["prometheus.io/scrape"]; ok {
		t.Error("prometheus.io annotations with a ServiceMonitor: every pod would be scraped twice")
	}
	for _, name := range []string{"Secret/edge-proxy-config", "Secret/edge-proxy-peers", "HorizontalPodAutoscaler/edge-proxy", "PodDisruptionBudget/edge-proxy"} {
		if kind, n, _ := strings.Cut(name, "/"); r.has(kind, n) {
			t.Errorf("%s rendered although its values turn it off", name)
		}
	}

	var sm struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port      string         `json:"port"`
				Path      string         `json:"path"`
				Scheme    string         `json:"scheme"`
				Interval  string         `json:"interval"`
				Timeout   string         `json:"scrapeTimeout"`
				TLSConfig map[string]any `json:"tlsConfig"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	doc := r.docs["ServiceMonitor/edge-proxy"]
	if doc == nil {
		t.Fatalf("no ServiceMonitor with serviceMonitor.enabled; have %v", r.names())
	}
	if err := yaml.Unmarshal(doc, &sm); err != nil {
		t.Fatal(err)
	}
	if ep := sm.Spec.Endpoints; len(ep) != 1 || ep[0].Port != "http" || ep[0].Path != "/metrics" || ep[0].Scheme != "https" || ep[0].TLSConfig == nil {
		t.Errorf("ServiceMonitor endpoints = %+v; want /metrics on http over https", ep)
	}
	if sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels = %v; want serviceMonitor.labels among them", sm.Metadata.Labels)
	}
	// It must select the proxy's Service only: selecting the headless one
	// too would scrape every pod twice.
	var svc, peers corev1.Service
	r.object("Service", "edge-proxy", &svc)
	r.object("Service", "edge-proxy-peers", &peers)
	if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) || selects(sm.Spec.Selector.MatchLabels, peers.Labels) {
		t.Errorf("ServiceMonitor selector %v; want the proxy's Service %v and not the peers' %v", sm.Spec.Selector.MatchLabels, svc.Labels, peers.Labels)
	}
}

func TestChartPeersOff(t *testing.T) {
	r := helmTemplate(t, "--set", "peers.enabled=false")
	var d appsv1.Deployment
	r.object("Deployment", "edge-proxy", &d)
	c := container(t, &d)
	for _, name := range []string{"PEERS", "PEER_SECRET"} {
		if _, ok := env(c, name); ok {
			t.Errorf("%s set with peers.enabled false", name)
		}
	}
	if r.has("Service", "edge-proxy-peers") || r.has("Secret", "edge-proxy-peers") {
		t.Errorf("peers objects rendered with peers.enabled false: %v", r.names())
	}
}

// TestChartLint runs helm's own checks of the chart, warnings included.
func TestChartLint(t *testing.T) {
	out, err := exec.Command("go", "tool", "helm", "lint", "--strict", chartDir).CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
}

func TestChartRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		reason string
		flags  []string
		want   string
	}{
		{"short peer secret", []string{"--set", "peers.secret=short"}, "peers.secret: must be at least 16 characters"},
		{"TLS without its Secret", []string{"--set", "tls.enabled=true"}, "tls.secretName"},
		{"no config", []string{"--set", "config=null"}, "config:"},
	} {
		out, err := runHelm(c.flags...)
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: helm template %v: err %v, output %q; want a failure saying %q", c.reason, c.flags, err, out, c.want)
		}
	}
}

// TestKubernetesManifestsGenerated fails when deploy/kubernetes differs
// from what its generate.sh renders from the chart: edit the chart (or
// deploy/kubernetes/values.yaml) and run deploy/kubernetes/generate.sh.
func TestKubernetesManifestsGenerated(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("bash", "../../kubernetes/generate.sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, out)
	}
	generated, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("generate.sh wrote no manifests (%v)", err)
	}
	var names []string
	for _, path := range generated {
		name := filepath.Base(path)
		names = append(names, name)
		want, _ := os.ReadFile(path)
		got, err := os.ReadFile(filepath.Join("../../kubernetes", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("deploy/kubernetes/%s is not what the chart renders (%v); run deploy/kubernetes/generate.sh", name, err)
		}
	}
	kustomization, err := os.ReadFile("../../kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(kustomization, &k); err != nil {
		t.Fatal(err)
	}
	slices.Sort(k.Resources)
	if !slices.Equal(k.Resources, names) {
		t.Errorf("kustomization.yaml lists %v; want the generated %v", k.Resources, names)
	}
	stale, _ := filepath.Glob("../../kubernetes/*.yaml")
	for _, path := range stale {
		if name := filepath.Base(path); name != "kustomization.yaml" && name != "values.yaml" && !slices.Contains(names, name) {
			t.Errorf("deploy/kubernetes/%s is not generated from the chart; remove it or add it to the chart", name)
		}
	}
}

// TestChartConfigLoads gives the proxy what a pod of the default rendering
// gets (config.json from the Secret, the Deployment's environment) and
// checks that it loads: the port, the peers and the peer secret it runs
// with are the chart's.
func TestChartConfigLoads(t *testing.T) {
	r := helmTemplate(t)
	var d appsv1.Deployment
	r.object("Deployment", "edge-proxy", &d)
	var cfg, peerSecret corev1.Secret
	r.object("Secret", "edge-proxy-config", &cfg)
	r.object("Secret", "edge-proxy-peers", &peerSecret)

	dir := t.TempDir()
	bin := filepath.Join(dir, "edge-proxy")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	configPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(configPath, []byte(cfg.StringData["config.json"]), 0o600); err != nil {
		t.Fatal(err)
	}
	environ := []string{"CONFIG_PATH=" + configPath}
	for _, e := range container(t, &d).Env {
		switch {
		case e.ValueFrom == nil:
			environ = append(environ, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "edge-proxy-peers":
			environ = append(environ, e.Name+"="+peerSecret.StringData[e.ValueFrom.SecretKeyRef.Key])
		default:
			t.Fatalf("environment variable %s from %+v: the test cannot resolve it", e.Name, e.ValueFrom)
		}
	}
	cmd := exec.Command(bin, "-print-config")
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("edge-proxy -print-config with the chart's config and environment: %v\n%s", err, out)
	}
	var printed struct {
		Server struct {
			Port int `json:"port"`
		} `json:"server"`
		Peers      []string `json:"peers"`
		PeerSecret string   `json:"peer_secret"`
		CacheDir   string   `json:"cache_dir"`
	}
	if err := json.Unmarshal(out, &printed); err != nil {
		t.Fatalf("-print-config: %v\n%s", err, out)
	}
	if printed.Server.Port != int(container(t, &d).Ports[0].ContainerPort) || !slices.Equal(printed.Peers, []string{"http://edge-proxy-peers:8000"}) ||
		printed.PeerSecret == "" || printed.CacheDir != "/var/cache/edge-proxy" {
		t.Errorf("the proxy runs with port %d, peers %q, peer_secret %q, cache_dir %q; want the container port, the peers Service, a secret, the cache mount",
			printed.Server.Port, printed.Peers, printed.PeerSecret, printed.CacheDir)
	}
}
