#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_report
short_description: Write report files (validate's JSON and JUnit XML) on the controller
description:
  - Writes each entry of O(files) into O(dest_dir) on the Ansible controller, creating the directory
    when it is missing. A file whose content is already the same is left alone.
  - Runs entirely in the controller as an action plugin (action_plugins/sapphire_report.py); nothing
    is sent to a managed host, which keeps writing a report as cheap as a C(set_fact).
  - Each file is written to a temporary file first and renamed over the old one, so a reader never
    sees half a report.
version_added: "1.0.0"
author: sapphire-ops
options:
  dest_dir:
    description: Directory on the controller that receives the files.
    type: path
    required: true
  files:
    description: File name (no directory part) to content.
    type: dict
    required: true
  mode:
    description: Permissions of the written files.
    type: raw
    default: "0640"
  dir_mode:
    description: Permissions of O(dest_dir) when it is created.
    type: raw
    default: "0750"
attributes:
  check_mode:
    support: full
    details: Under check mode nothing is written; RV(would_write) names what would be.
  diff_mode:
    support: none
  action:
    support: full
  delegation:
    support: none
    details: Always runs on the controller.
"""

EXAMPLES = r"""
- name: Write the JSON and JUnit XML reports
  sapphire_report:
    dest_dir: "{{ sapphire_local_dir }}/reports"
    files:
      validate.json: "{{ report | to_nice_json }}"
      validate.junit.xml: "{{ junit }}"
"""

RETURN = r"""
dest_dir:
  description: The directory the files went to.
  returned: always
  type: str
written:
  description: Names of the files written (their content changed).
  returned: always
  type: list
  elements: str
unchanged:
  description: Names of the files that already had this content.
  returned: always
  type: list
  elements: str
would_write:
  description: Under check mode, the names of the files that would be written.
  returned: check mode
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={
        "dest_dir": {"type": "path", "required": True},
        "files": {"type": "dict", "required": True},
        "mode": {"type": "raw", "default": "0640"},
        "dir_mode": {"type": "raw", "default": "0750"},
    }, supports_check_mode=True)
    module.fail_json(msg="sapphire_report runs on the controller through its action plugin; "
                         "check that action_plugins in ansible.cfg points at action_plugins/")


if __name__ == "__main__":
    main()
