# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sapphire_s3_bucket_check run inside the worker when it runs on the controller (see sapphire_direct.py)."""

from __future__ import annotations

import sys

from ansible.plugins.loader import action_loader

DirectModule = action_loader.get("sapphire_direct", class_only=True)
sapphire_direct = sys.modules[DirectModule.__module__]
sapphire_direct.preload(
    "boto3",
    "ansible_collections.amazon.aws.plugins.module_utils.modules",
)


class ActionModule(DirectModule):
    """library/sapphire_s3_bucket_check.py in the worker, or as a module where that would change where it runs."""
