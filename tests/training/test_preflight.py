"""The output folder's lock: one training per folder, the second told who holds it."""

import os

import pytest

from medrlvr.config import ConfigError
from medrlvr.training.preflight import output_dir_lock


def test_a_second_lock_on_the_same_folder_names_the_holder(tmp_path):
    holder = rf"trainer.output_dir: {tmp_path} is in use by another training \(process {os.getpid()} on "
    with output_dir_lock(tmp_path):
        with pytest.raises(ConfigError, match=holder):
            with output_dir_lock(tmp_path):
                pass
    with output_dir_lock(tmp_path):  # released at the end of the block
        pass
