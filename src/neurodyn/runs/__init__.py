"""Every file a run writes or reads, in one place.

``layout`` names the files and folders of a ``neurodyn train`` run and of a ``neurodyn run``
(AutoLFADS) results folder; ``checkpoint`` stores trainer states without pickle (safetensors plus
plain JSON); ``outputs`` writes and reads the ``<split>_output.h5`` files; ``identity`` records
which config and which data file (by content hash) a folder's run was made with and decides
whether a command may start, continue or must refuse; ``tables`` writes the CSV logs; ``pbt_store``
keeps a PBT run's committed state, worker folders and the exported best model.

This layer sits between the models and training: it imports ``config``, ``data``,
``observation`` and ``lfads``, never ``train``, ``pbt``, ``evaluate`` or ``cli``.
"""
