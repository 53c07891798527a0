"""Without nfqscand the ruleset's `--queue-bypass` lets every flow through:
a router with nfqscan's rules but no daemon running still works."""

from clients import curl_download, curl_mail, mail_message
from servers import Dovecot, Nginx


def test_without_nfqscand_http_pop3_and_imap_pass_over_ipv4_and_ipv6(lab):
    nginx = Nginx(lab, ports=[80])
    digest = nginx.add_random_file("file.bin", 5 * 1024 * 1024)
    dovecot = Dovecot(lab, pop3_ports=[110], imap_ports=[143])
    message = mail_message("bypass", 20_000)
    dovecot.deliver("alice", message)
    http = lab.port_counter(80)

    assert lab.kernel_queues() == {}, "no process may have bound a queue in this test"
    for family in (4, 6):
        got = curl_download(lab, nginx.url("/file.bin", family=family))
        assert got["http_code"] == 200
        assert got["sha256"] == digest, f"IPv{family} download differs from the source"
    forwarded = http.packets()
    assert forwarded["c2s"] > 0 and forwarded["s2c"] > 0, \
        f"the downloads did not cross the router: {forwarded}"

    pop3 = curl_mail(lab, [lab.url("pop3", 110, "/1", family=4)], "alice", "wonderland")
    assert pop3 == message, "POP3 RETR returned other bytes than were delivered"
    imap = curl_mail(lab, [lab.url("imap", 143, "/INBOX;UID=1", family=6)],
                     "alice", "wonderland")
    assert imap == message, "IMAP FETCH returned other bytes than were delivered"
