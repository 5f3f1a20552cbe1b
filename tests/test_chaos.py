"""The short chaos soak (about 20 s of faults, then the crash case).

It runs on a throwaway cluster of its own, never on the shared one.  The
long soak is ``bin/chaos --duration 300``.
"""

import json
import os
import shutil
import tempfile
import unittest

from zope.testing.cleanup import cleanUp

from chaos import KINDS
from chaos.report import table
from chaos.soak import run_soak


class ShortSoakTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-chaos-')

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        cleanUp()

    def test_short_soak_passes_its_audit(self):
        json_path = os.path.join(self.tmp, 'report.json')
        report = run_soak(duration=20, workers=8, seed=20250101,
                          interval=0.8, durability_units=40,
                          json_path=json_path)
        summary = table(report)
        self.assertTrue(report['passed'], summary)
        # The workers logged in with a password that never showed.
        self.assertEqual(report['password_leaks'], 0)
        units = report['units']
        self.assertGreater(units['committed'], 100, summary)
        self.assertEqual(units['lost'], 0, summary)
        self.assertEqual(units['duplicated'], 0, summary)
        self.assertEqual(units['failed_present'], 0, summary)
        self.assertEqual(units['failed_final'], 0, summary)
        self.assertEqual(units['ambiguous'], 0, summary)
        self.assertEqual(units['strangers'], 0, summary)
        self.assertEqual(units['journal_mismatch'], 0, summary)
        self.assertGreater(units['committed_two_phase'], 0, summary)
        self.assertGreater(units['failed_and_retried'], 0, summary)
        self.assertTrue(report['invariant']['holds'], summary)
        for phase in ('leaks', 'final_leaks'):
            self.assertEqual(report[phase]['leaked_backends'], 0, summary)
            self.assertEqual(report[phase]['prepared'], 0, summary)
        self.assertEqual(report['anomalies']['hung_workers'], 0, summary)
        self.assertEqual(report['anomalies']['unexpected_errors'], {},
                         summary)
        # Every kind of fault came up at least once.
        self.assertEqual(sorted(k for k, n in
                                report['faults_by_kind'].items() if n),
                         sorted(KINDS), summary)
        durability = report['durability']
        self.assertTrue(durability['passed'], summary)
        self.assertEqual(durability['present_after_crash'],
                         durability['acknowledged'])
        self.assertTrue(durability['prepared_survived'])
        self.assertTrue(durability['prepared_resolved'])
        with open(json_path) as f:
            written = json.load(f)
        self.assertEqual(written['units']['committed'], units['committed'])
        self.assertTrue(written['passed'])
        # The throwaway cluster is gone.
        self.assertFalse(os.path.exists(report['cluster']))
