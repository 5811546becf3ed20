"""Deployment adapters: an exported bundle as a DICOM classifier for MONAI Deploy and MONAI Label.

:mod:`mimmx.deploy.classifier` and :mod:`mimmx.deploy.dicom_inputs` need only torch, MONAI and pydicom;
:mod:`mimmx.deploy.operators` and :mod:`mimmx.deploy.app` need monai-deploy-app-sdk, :mod:`mimmx.deploy.label`
needs monailabel (each in its own environment).
"""
