"""HTTP through nfqscand: downloads arrive intact on both address families,
the whole flow stays in the queue, and HTTP is found on ports the
configuration does not list."""

from clients import curl_download
from nfqscand import Nfqscand
from servers import Nginx

BIG = 50 * 1024 * 1024
# A queued packet carries at most 64 KiB of payload (a GSO super-packet), so
# a flow that stayed in the queue needs at least size / 64 KiB packets.
GSO_MAX = 64 * 1024


def download_through_nfqscand(lab, nfqscand, family: int) -> None:
    nginx = Nginx(lab, ports=[80])
    digest = nginx.add_random_file("big.bin", BIG)
    daemon = nfqscand()
    before = daemon.status()

    got = curl_download(lab, nginx.url("/big.bin", family=family))

    assert got["http_code"] == 200
    assert got["size_download"] == BIG
    assert got["sha256"] == digest, "the file arrived altered"
    after = daemon.wait_queues_idle()
    queued = (Nfqscand.kernel_sum(after, "id_sequence")
              - Nfqscand.kernel_sum(before, "id_sequence"))
    seen = Nfqscand.queue_sum(after, "packets") - Nfqscand.queue_sum(before, "packets")
    assert queued >= BIG // GSO_MAX, (
        f"the kernel queued only {queued} packets for a {BIG} byte download: "
        "the flow left the queue")
    assert seen == queued, f"nfqscand counted {seen} packets, the kernel queued {queued}"
    flow = daemon.wait_flow(server_port=80, server=lab.server_address(family),
                            client=lab.client_address(family))
    assert flow["service"] == "http", flow
    assert flow["disposition"] == "claimed", flow
    assert flow["bytes_s2c"] >= BIG, flow


def test_http_download_is_byte_identical_ipv4(lab, nfqscand):
    download_through_nfqscand(lab, nfqscand, family=4)


def test_http_download_is_byte_identical_ipv6(lab, nfqscand):
    download_through_nfqscand(lab, nfqscand, family=6)


def test_http_on_non_standard_port_is_labelled_http(lab, nfqscand):
    nginx = Nginx(lab, ports=[8888])
    digest = nginx.add_random_file("page.bin", 2 * 1024 * 1024)
    daemon = nfqscand()
    assert 8888 not in daemon.config["protocols"]["http"]["ports"]

    got = curl_download(lab, nginx.url("/page.bin"))

    assert got["sha256"] == digest
    flow = daemon.wait_flow(server_port=8888)
    assert flow["dpi"] == "HTTP", flow
    assert flow["service"] == "http", flow
    assert flow["disposition"] == "claimed", flow
    assert flow["claimed_by"] in ("probe", "dpi"), \
        f"port 8888 is not configured, yet the flow was claimed by {flow['claimed_by']}"
