/*
 * nfqscan's own test rules, loaded with the rest of rules/yara/.
 *
 * Metadata `category` ("virus", "spam" or "policy"; "virus" when absent) is
 * carried into the verdict and lets the policy act differently on each.
 * Rules see every layer ClamAV unpacks, and the external variables
 * `filename`, `filetype` (ClamAV's type, e.g. "CL_TYPE_ZIP"; empty for the
 * object itself) and `depth` (0 for the object itself).
 */

// The EICAR anti-virus test file, anywhere in the data. ClamAV does not
// raw-scan HTML-typed content, so EICAR pasted into a web page is found here.
// Hex, so that this file is not itself an EICAR carrier.
rule NfqScan_Test_EICAR
{
    meta:
        category = "virus"
        description = "EICAR anti-virus test string"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"
    strings:
        // X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43
                   29 37 7D 24 45 49 43 41 52 2D 53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56
                   49 52 55 53 2D 54 45 53 54 2D 46 49 4C 45 21 24 48 2B 48 2A }
    condition:
        $eicar
}

// Test markers for the policy and spam categories: put the text into a
// document, mail or archive to see the category reach the verdict and the
// layer path show where it was found.
rule NfqScan_Test_Policy_Marker
{
    meta:
        category = "policy"
        description = "nfqscan policy test marker"
    strings:
        $marker = "NFQSCAN-TEST-POLICY-MARKER"
    condition:
        $marker
}

rule NfqScan_Test_Spam_Marker
{
    meta:
        category = "spam"
        description = "nfqscan spam test marker"
    strings:
        $marker = "NFQSCAN-TEST-SPAM-MARKER"
    condition:
        $marker
}
