"""ORBIT (microsoft/ORBIT-Dataset): the release's folder layout (`dataset`), the task protocols
(`tasks`), tasks as lite_tf episodes (`episodes`) and release-style demo data (`synthetic`)."""
