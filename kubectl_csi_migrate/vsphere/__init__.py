"""vCenter access: credentials, First Class Disk lookup and registration.

This layer never imports kubernetes; the migration logic hands it what it needs.
"""
