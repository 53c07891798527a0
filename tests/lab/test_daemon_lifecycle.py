"""What happens to traffic when nfqscand dies: the queues' bypass lets it
flow, and a restarted nfqscand takes the new flows (flows the stream engine
rewrote or relayed are the exception: test_stream_relay.py). And what
nfqscand says at start about the sysctl the stream engine needs."""

from clients import curl_download
from lab import wait_until
from nfqscand import Nfqscand
from servers import Nginx

SIZE = 8 * 1024 * 1024


def test_killing_nfqscand_keeps_traffic_flowing_and_restart_picks_up_new_flows(lab, nfqscand):
    nginx = Nginx(lab, ports=[80])
    digest = nginx.add_random_file("file.bin", SIZE)
    forwarded = lab.port_counter(80)
    daemon = nfqscand()
    first_pid = daemon.status()["pid"]

    daemon.kill()
    wait_until(lambda: lab.kernel_queues() == {}, 10,
               "the kernel to unbind the queues of the killed nfqscand")
    routed_before = forwarded.packets()
    got = curl_download(lab, nginx.url("/file.bin"))
    assert got["sha256"] == digest, "download while nfqscand was dead arrived altered"
    routed = forwarded.packets()
    assert routed["s2c"] > routed_before["s2c"], "the download did not cross the router"

    daemon.start()
    before = daemon.status()
    assert before["pid"] != first_pid
    got = curl_download(lab, nginx.url("/file.bin", family=6))
    assert got["sha256"] == digest, "download after the restart arrived altered"
    after = daemon.wait_queues_idle()
    assert after["flows"]["total"] > before["flows"]["total"], after["flows"]
    flow = daemon.wait_flow(server_port=80, server=lab.server_address(6))
    assert flow["disposition"] == "claimed", flow
    queued = (Nfqscand.kernel_sum(after, "id_sequence")
              - Nfqscand.kernel_sum(before, "id_sequence"))
    assert queued >= SIZE // (64 * 1024), f"the restarted nfqscand queued only {queued} packets"


def test_liberal_conntrack_tracking_off_is_reported(lab, nfqscand):
    """nf_conntrack_tcp_be_liberal (rules/nfqscan-sysctl.conf) is required
    for flows nfqscand rewrites or relays: with it off, nfqscand warns at
    start and status says so; with it on (the lab applies the file), status
    says that too."""
    daemon = nfqscand()
    assert daemon.status()["streams"]["conntrack_tcp_liberal"] is True
    assert "be_liberal is 0" not in daemon.log_text()
    daemon.stop()

    lab.router.sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", 0)
    daemon.start()
    assert daemon.status()["streams"]["conntrack_tcp_liberal"] is False
    wait_until(lambda: "nf_conntrack_tcp_be_liberal is 0" in daemon.log_text(), 10,
               "nfqscand's warning about nf_conntrack_tcp_be_liberal")
