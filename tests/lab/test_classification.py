"""Which flows nfqscand keeps: a scanned protocol on a port the configuration
does not name is still claimed (and every packet of it inspected); a protocol
it does not scan is released to the kernel's fast path after a few packets."""

from banner_server import expected_stream
from clients import banner_session, curl_mail, mail_message
from nfqscand import Nfqscand
from servers import BannerServer, Dovecot

GSO_MAX = 64 * 1024


def test_pop3_on_non_standard_port_is_claimed(lab, nfqscand):
    dovecot = Dovecot(lab, pop3_ports=[1110], imap_ports=[])
    message = mail_message("claimed on 1110", 300_000)
    dovecot.deliver("alice", message)
    daemon = nfqscand()
    assert 1110 not in daemon.config["protocols"]["pop3"]["ports"]
    forwarded = lab.port_counter(1110)

    # Two URLs, one connection: LIST, then RETR 1.
    out = curl_mail(lab, [lab.url("pop3", 1110, "/"), lab.url("pop3", 1110, "/1")],
                    "alice", "wonderland")

    assert out == f"1 {len(message)}\r\n".encode() + message
    daemon.wait_queues_idle()
    flow = daemon.wait_flow(server_port=1110)
    routed = forwarded.packets()
    assert flow["service"] == "pop3", flow
    assert flow["disposition"] == "claimed", flow
    classify = daemon.config["flows"]["classify_packets"]
    assert routed["c2s"] + routed["s2c"] > classify + 3, \
        f"the session was too short to tell: {routed}"
    # The POP3 inspector holds the RETR response and delivers it itself (the
    # relay's segments come out of the relay device and are forwarded, not
    # queued): the router forwards those on top of the server's own packets,
    # each of which went through the queue.
    streams = daemon.status()["streams"]
    own = streams["relay"]["segments"] + streams["injected_packets"]
    assert flow["packets_c2s"] == routed["c2s"], (routed, flow)
    assert flow["packets_s2c"] <= routed["s2c"] <= flow["packets_s2c"] + own, (
        f"the router forwarded {routed} packets of the session, nfqscand saw "
        f"c2s={flow['packets_c2s']} s2c={flow['packets_s2c']} and sent {own} of its own")
    assert daemon.status()["protocols"]["pop3"]["objects"] == 1


def test_unscanned_flow_is_released(lab, nfqscand):
    size = 20 * 1024 * 1024
    BannerServer(lab, port=2222, banner=b"SSH-2.0-OpenSSH_9.2p1", stream_bytes=size)
    daemon = nfqscand()
    forwarded = lab.port_counter(2222)
    before = daemon.status()

    banner, data = banner_session(lab, lab.server_address(4), 2222,
                                  b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    assert banner == b"SSH-2.0-OpenSSH_9.2p1\r\n"
    assert len(data) == size and data == expected_stream(size), "the stream arrived altered"
    after = daemon.wait_queues_idle()
    flow = daemon.wait_flow(server_port=2222)
    assert flow["disposition"] == "released", flow
    assert flow["service"] == "none", flow
    routed = forwarded.packets()
    queued = (Nfqscand.kernel_sum(after, "id_sequence")
              - Nfqscand.kernel_sum(before, "id_sequence"))
    seen = Nfqscand.queue_sum(after, "packets") - Nfqscand.queue_sum(before, "packets")
    assert routed["c2s"] + routed["s2c"] >= size // GSO_MAX, routed
    assert queued < 20, (f"the kernel queued {queued} of the {routed} forwarded packets: "
                         "the released flow kept going through the queue")
    assert seen < 20, f"nfqscand read {seen} packets of a released flow"


def test_release_without_the_mark_rule_in_the_ruleset_does_not_loop(lab, nfqscand):
    """A ruleset that lacks the rules saving the release mark queues the
    packets nfqscand answered with NF_REPEAT again, mark and all: answering
    them with NF_REPEAT once more would loop forever in the kernel. They are
    accepted, warned about and counted; the flow keeps working."""
    for tool in ("iptables", "ip6tables"):
        for rule in (["-j", "CONNMARK", "--or-mark", "0x00100000"], ["-j", "RETURN"]):
            lab.router.run([tool, "-w", "-t", "mangle", "-D", "NFQSCAN", "-m", "mark",
                            "--mark", "0x00100000/0x00100000", *rule])
    size = 1024 * 1024
    BannerServer(lab, port=2222, banner=b"SSH-2.0-OpenSSH_9.2p1", stream_bytes=size)
    daemon = nfqscand()

    banner, data = banner_session(lab, lab.server_address(4), 2222,
                                  b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", timeout=20)

    assert banner == b"SSH-2.0-OpenSSH_9.2p1\r\n"
    assert len(data) == size and data == expected_stream(size), "the stream arrived altered"
    after = daemon.wait_queues_idle()
    assert daemon.wait_flow(server_port=2222)["disposition"] == "released"
    assert after["packets"]["repeat_marked"] >= 1, after["packets"]
    assert "lacks the rule that saves it" in daemon.log_text()
