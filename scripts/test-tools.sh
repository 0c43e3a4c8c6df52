#!/usr/bin/env bash
# What the tests need beyond Node, installed from Debian's packages when it is missing (as root), or named
# in one clear error (otherwise), so that `npm test` works on a fresh machine and never hangs on a missing
# tool. Run by `npm test` (pretest) and by .ci/run.
set -euo pipefail
# ethtool and ip live in sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

need=()
# test/wire/tshark.test.ts decodes the wire format with a real tshark.
command -v tshark >/dev/null || need+=(tshark)
# The native relay (native/) is built with the system compiler.
command -v cc >/dev/null || need+=(gcc libc6-dev)
# The etcd GlobalStore tests start a real 3-member cluster from /usr/bin/etcd.
command -v etcd >/dev/null || need+=(etcd-server)
# The remote-state bench test starts a real redis-server.
command -v redis-server >/dev/null || need+=(redis-server)
# The experiments' PNG plots are drawn with a system font (bench/experiments/plot.ts).
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# The lab tests (test/lab) make network namespaces with ip, and turn off the hosts' checksum offload with
# ethtool; bench tcp-failover drives UDP with iperf.
command -v ip >/dev/null || need+=(iproute2)
command -v ethtool >/dev/null || need+=(ethtool)
command -v iperf >/dev/null || need+=(iperf)
# test/launcher/prometheus.test.ts checks every role's /metrics, and deploy/'s configuration and dashboard,
# with promtool.
command -v promtool >/dev/null || need+=(prometheus)
# test/controller/dashboard.test.ts opens the controller's live dashboard in a real headless browser.
command -v chromium >/dev/null || need+=(chromium)
# test/launcher/ovs.test.ts runs the demo through an Open vSwitch bridge (its userspace datapath).
command -v ovs-vswitchd >/dev/null || need+=(openvswitch-switch)
# nfstate chaos drops replication traffic and cuts an instance off its cluster with nftables.
command -v nft >/dev/null || need+=(nftables)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "npm test needs Debian packages that are not installed: ${need[*]}" >&2
  echo "install them (as root: apt-get install ${need[*]}), or run npm test as root on Debian" >&2
  exit 1
fi
echo "installing what the tests need: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# tshark asks whether non-root users may capture; the answer does not matter here.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
