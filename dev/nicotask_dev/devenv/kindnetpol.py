"""NetworkPolicy enforcement for the offline kind node: kube-router's policy controller.

The node's static ptp CNI config gives pods a network but enforces no policy.
kube-router's network-policy controller does it with iptables and ipsets on the
node, next to any CNI that routes pod traffic through the node (ptp does), the
way upstream's firewall-only DaemonSet runs it (`--run-firewall=true
--run-router=false --run-service-proxy=false`).

The binary is a small main (WRAPPER_MAIN) around kube-router's own packages that
runs only that controller, so the build links neither BGP, IPVS nor the cloud
SDKs of the full kube-router command (about half the compile); it is static,
cached by version under ~/.cache/nicotask. The image is the node's Debian rootfs
(iptables, ipset) plus that binary, saved into one archive with kube-proxy's
image (kindcomponents), which shares the rootfs layer.

    python -m nicotask_dev.devenv.kindnetpol              # build when needed, print the path
    python -m nicotask_dev.devenv.kindnetpol --manifest   # the DaemonSet and its RBAC (YAML)
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import gobuild

MODULE = "github.com/cloudnativelabs/kube-router/v2"
# The one release the module proxy serves here. Advisories are reported against its
# dependencies; it only ever runs inside a throwaway, offline test cluster.
VERSION = "v2.1.0"
IMAGE = f"localhost/nicotask-kube-router:{VERSION}"
NAME = "kube-router"
HEALTH_PORT = 20244  # kube-router's default --health-port
ARGS = ("--run-router=false", "--run-firewall=true", "--run-service-proxy=false")

WRAPPER_MAIN = """package main

// kube-router's Run (pkg/cmd) with only the network policy controller: the same
// options, health controller and informers, none of the router or service proxy.

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/version"
	"github.com/spf13/pflag"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	klog.InitFlags(nil)
	config := options.NewKubeRouterConfig()
	config.AddFlags(pflag.CommandLine)
	pflag.Parse()
	if err := flag.Set("logtostderr", "true"); err != nil {
		return err
	}
	if err := flag.Set("v", config.VLevel); err != nil {
		return err
	}
	if config.Version {
		version.PrintVersion(false)
		return nil
	}
	if config.RunRouter || config.RunServiceProxy || config.RunLoadBalancer || !config.RunFirewall {
		return fmt.Errorf("this build runs only the firewall: pass --run-firewall=true " +
			"--run-router=false --run-service-proxy=false")
	}
	version.PrintVersion(true)
	restConfig, err := clientcmd.BuildConfigFromFlags(config.Master, config.Kubeconfig)
	if err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}

	var wg sync.WaitGroup
	var ipsetMutex sync.Mutex
	healthChan := make(chan *healthcheck.ControllerHeartbeat, 10)
	stopCh := make(chan struct{})
	hc, err := healthcheck.NewHealthController(config)
	if err != nil {
		return err
	}
	wg.Add(1)
	go hc.RunServer(stopCh, &wg)

	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(stopCh)
	for informer, synced := range factory.WaitForCacheSync(stopCh) {
		if !synced {
			return fmt.Errorf("informer cache did not sync: %v", informer)
		}
	}
	hc.SetAlive()
	wg.Add(1)
	go hc.RunCheck(healthChan, stopCh, &wg)

	iptables, ipsets, err := netpol.NewIPTablesHandlers(config)
	if err != nil {
		return fmt.Errorf("iptables handlers: %w", err)
	}
	npc, err := netpol.NewNetworkPolicyController(client, config, pods, policies, namespaces,
		&ipsetMutex, iptables, ipsets)
	if err != nil {
		return fmt.Errorf("network policy controller: %w", err)
	}
	if _, err := pods.AddEventHandler(npc.PodEventHandler); err != nil {
		return err
	}
	if _, err := namespaces.AddEventHandler(npc.NamespaceEventHandler); err != nil {
		return err
	}
	if _, err := policies.AddEventHandler(npc.NetworkPolicyEventHandler); err != nil {
		return err
	}
	wg.Add(1)
	go npc.Run(healthChan, stopCh, &wg)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	close(stopCh)
	wg.Wait()
	return nil
}
"""


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


def binary_path(version: str = VERSION) -> Path:
    return gobuild.cache_root() / f"kube-router-{version}" / "kube-router"


def wrapper_gomod(version: str = VERSION) -> str:
    return f"module nicotask.local/kube-router-netpol\n\ngo 1.22\n\nrequire {MODULE} {version}\n"


def ldflags(version: str = VERSION) -> str:
    return f"-s -w -X {MODULE}/pkg/version.Version={version}"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kube_router(version: str = VERSION) -> Path:
    """The static policy-controller binary, built once per version."""
    path = binary_path(version)
    if path.exists():
        return path
    src = path.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(wrapper_gomod(version))
    (src / "main.go").write_text(WRAPPER_MAIN)
    env = gobuild.build_env()  # CGO_ENABLED=0, -mod=mod: go.sum is filled in by the build
    _log(f"kube-router {version}: compiling its network policy controller (first time only)")
    started, cpu = time.monotonic(), children_cpu_seconds()
    partial = path.with_suffix(".partial")
    gobuild.go_build(
        ["-trimpath", "-ldflags", ldflags(version), "-o", str(partial), "."],
        src,
        env,
        f"kube-router {version}",
    )
    partial.rename(path)
    _log(
        f"kube-router {version}: built in {time.monotonic() - started:.0f}s wall, "
        f"{children_cpu_seconds() - cpu:.0f}s CPU -> {path}"
    )
    return path


def containerfile(rootfs: str) -> str:
    return (
        f"FROM {rootfs}\nCOPY kube-router /usr/local/bin/kube-router\n"
        'ENTRYPOINT ["/usr/local/bin/kube-router"]\n'
    )


def rbac() -> list[dict[str, Any]]:
    """What the policy controller reads: its node, and pods, namespaces and policies."""
    rules = [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["list", "watch"],
        },
    ]
    meta = {"name": NAME, "labels": {"k8s-app": NAME}}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {**meta, "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": "kube-system"}],
        },
    ]


def daemonset(image: str = IMAGE) -> dict[str, Any]:
    """On the node's network, privileged (iptables, ipset), with the node's xtables lock
    so its iptables calls and kube-proxy's take turns."""
    labels = {"k8s-app": NAME}
    probe = {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": NAME,
                            "image": image,
                            "imagePullPolicy": "Never",  # in the node image, never pulled
                            "args": [*ARGS, f"--health-port={HEALTH_PORT}"],
                            "env": [
                                {
                                    "name": "NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                }
                            ],
                            "securityContext": {"privileged": True},
                            "livenessProbe": {**probe, "initialDelaySeconds": 10},
                            "readinessProbe": probe,
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                            "volumeMounts": [
                                {
                                    "name": "lib-modules",
                                    "mountPath": "/lib/modules",
                                    "readOnly": True,
                                },
                                {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                        {
                            "name": "xtables-lock",
                            "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                        },
                    ],
                },
            },
        },
    }


def manifest(image: str = IMAGE) -> str:
    return yaml.safe_dump_all([*rbac(), daemonset(image)], sort_keys=False)


def main() -> None:
    if sys.argv[1:] == ["--manifest"]:
        print(manifest(), end="")
        return
    try:
        print(kube_router())
    except RuntimeError as exc:
        print(f"nicotask kube-router build failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
